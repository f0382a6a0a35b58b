package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServeHelpListsEveryVariable: every SPOOL_ variable the server's code reads is in serve --help.
func TestServeHelpListsEveryVariable(t *testing.T) {
	t.Parallel()
	help := newServeCmd(envMap(nil)).Long
	read := regexp.MustCompile(`"(SPOOL_[A-Z_]+)"`)
	found := 0
	for _, f := range []string{"config.go", "serve.go", "secretkey.go", "storeopen.go"} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range read.FindAllStringSubmatch(string(b), -1) {
			found++
			require.True(t, strings.Contains(help, m[1]), "serve --help does not list %s, which %s reads", m[1], f)
		}
	}
	require.Positive(t, found, "the variables the server reads were found")
}
