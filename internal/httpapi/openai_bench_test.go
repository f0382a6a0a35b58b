package httpapi_test

import (
	"bufio"
	"testing"
)

// BenchmarkChunkRelay measures one chunk's way from the worker's job-stream post to the client
// holding the stream, on loopback: through the OpenAI relay (a streamed chat completion), and
// through Spool's own /stream as Server-Sent Events, the direct path it is compared with. The
// difference is what the relay adds per chunk; the first chunk of a stream takes the same way,
// so it is also what the relay adds to the time to first byte after the worker's first yield.
func BenchmarkChunkRelay(b *testing.B) {
	chunk := `{"output":"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"}}]}\n\n"}`
	b.Run("openai", func(b *testing.B) {
		e := newEnv(b)
		res := e.openAIStream(e.ctx, "chat/completions", `{"messages":[],"stream":true}`)
		br := bufio.NewReader(res.Body)
		id := sval(b, e.take("w1")["id"])
		b.ResetTimer()
		for range b.N {
			if r := e.post("job-stream", "w1", id, chunk); r.status != 200 {
				b.Fatal(r.body)
			}
			readUntil(b, br, "\n\n")
		}
	})
	b.Run("stream-sse", func(b *testing.B) {
		e := newEnv(b)
		id := e.run("ep", `{"input":{}}`)
		e.take("w1")
		res := e.openEvents("/v2/ep/stream/"+id, "")
		br := bufio.NewReader(res.Body)
		b.ResetTimer()
		for range b.N {
			if r := e.post("job-stream", "w1", id, chunk); r.status != 200 {
				b.Fatal(r.body)
			}
			readUntil(b, br, "\n\n")
		}
	})
}
