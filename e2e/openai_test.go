package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// openAIClientScript drives the official OpenAI JavaScript SDK against a Spool endpoint: each
// route the example worker serves, streamed and not, and a request the worker refuses. It prints
// what it saw as one JSON object.
const openAIClientScript = `
const { OpenAI } = require('openai');
const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0, timeout: 60000 });
(async () => {
  const out = {};
  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);

  const chat = await client.chat.completions.create({ model: 'spool-echo', messages: [{ role: 'user', content: 'hello from node' }] });
  out.chat = chat.choices[0].message.content;

  const t0 = Date.now();
  const arrivals = [];
  let text = '';
  const stream = await client.chat.completions.create({
    model: 'spool-echo', stream: true, messages: [{ role: 'user', content: 'one two three four five' }],
  });
  for await (const chunk of stream) {
    const piece = chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
    if (piece) { text += piece; arrivals.push(Date.now() - t0); }
  }
  out.streamed = text;
  out.arrivals = arrivals;

  const completion = await client.completions.create({ model: 'spool-echo', prompt: 'alpha beta gamma' });
  out.completion = completion.choices[0].text;
  let streamedCompletion = '';
  for await (const chunk of await client.completions.create({ model: 'spool-echo', prompt: 'x y', stream: true })) {
    streamedCompletion += chunk.choices[0].text;
  }
  out.streamedCompletion = streamedCompletion;

  try {
    await client.chat.completions.create({ model: 'spool-echo', messages: [] });
    out.invalid = null;
  } catch (e) {
    out.invalid = { badRequest: e instanceof OpenAI.BadRequestError, status: e.status, message: e.message };
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`

// TestOpenAIClientSDK: the official openai npm package works against /v2/ENDPOINT/openai/v1, unchanged,
// with the example worker (examples/openai-worker) started by the autoscaler. .ci/run installs the
// package and names its node_modules in SPOOL_TEST_OPENAI_NODE_MODULES.
func TestOpenAIClientSDK(t *testing.T) {
	t.Parallel()
	modules := os.Getenv("SPOOL_TEST_OPENAI_NODE_MODULES")
	if modules == "" {
		t.Skip("SPOOL_TEST_OPENAI_NODE_MODULES is not set: install the OpenAI JS SDK with `npm install --prefix DIR openai@6.49.0` and set it to DIR/node_modules (.ci/run does)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the OpenAI client test runs the official openai npm package with Node.js")
	}
	const wordDelay = 100 * time.Millisecond
	worker := buildExample(t, "./examples/openai-worker")
	s := startServer(t, serverOpts{Config: `
endpoints:
  - name: llm
    workersMax: 1
    idleTimeout: 1m
    worker:
      command: ` + worker + `
      env: {WORD_DELAY: ` + wordDelay.String() + `}
`})
	script := filepath.Join(t.TempDir(), "client.cjs")
	require.NoError(t, os.WriteFile(script, []byte(openAIClientScript), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NODE_PATH=" + modules,
		"BASE_URL=" + s.URL + "/v2/llm/openai/v1", "API_KEY=" + s.Keys.Client}
	out, err := cmd.Output()
	var stderr []byte
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	require.NoError(t, err, "node: %s", stderr)

	var got struct {
		Models             []string  `json:"models"`
		Chat               string    `json:"chat"`
		Streamed           string    `json:"streamed"`
		Arrivals           []float64 `json:"arrivals"`
		Completion         string    `json:"completion"`
		StreamedCompletion string    `json:"streamedCompletion"`
		Invalid            *struct {
			BadRequest bool   `json:"badRequest"`
			Status     int    `json:"status"`
			Message    string `json:"message"`
		} `json:"invalid"`
	}
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)
	require.Equal(t, []string{"spool-echo"}, got.Models)
	require.Equal(t, "You said: hello from node", got.Chat)
	require.Equal(t, "You said: one two three four five", got.Streamed)
	require.Equal(t, "gamma beta alpha", got.Completion)
	require.Equal(t, "y x", got.StreamedCompletion)
	require.NotNil(t, got.Invalid, "an invalid request must fail")
	require.True(t, got.Invalid.BadRequest, "the SDK's typed error: %+v", got.Invalid)
	require.Equal(t, 400, got.Invalid.Status)
	require.Contains(t, got.Invalid.Message, "messages must be a non-empty list")
	// The worker waits wordDelay before each of its 7 words: relayed as they come, the first
	// arrives long before the last (a relay that held the answer until the job ended would
	// deliver them together).
	require.Len(t, got.Arrivals, 7)
	spread := time.Duration(got.Arrivals[len(got.Arrivals)-1]-got.Arrivals[0]) * time.Millisecond
	require.GreaterOrEqual(t, spread, 3*wordDelay, "arrivals %v ms", got.Arrivals)
}

// buildExample builds a package of the repository into the test's directory and returns the binary.
func buildExample(t *testing.T, pkg string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	build := exec.Command(goTool, "build", "-o", bin, pkg)
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build %s: %s", pkg, out)
	return bin
}
