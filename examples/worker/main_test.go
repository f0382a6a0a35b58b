package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/spoolworker"
)

func TestHandle(t *testing.T) {
	var out bytes.Buffer
	err := spoolworker.RunLocal(context.Background(), spoolworker.HandlerFunc(handle),
		json.RawMessage(`{"input":{"text":"the quick  fox"}}`), &out)
	require.NoError(t, err)
	require.Equal(t, `{"output":["the","quick","fox"]}`+"\n", out.String())

	out.Reset()
	err = spoolworker.RunLocal(context.Background(), spoolworker.HandlerFunc(handle), json.RawMessage(`{"input":{"text":" "}}`), &out)
	require.ErrorContains(t, err, "at least one word")
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
