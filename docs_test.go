package spool_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// outsideNotes is the folder beside the repository that the team's notes live in, spelt in two
// pieces so that this file does not name it itself.
var outsideNotes = "../" + "shared"

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsLinkInsideTheRepository: a clone has only its own files, so every relative link of every
// Markdown file names a file of the repository, and nothing refers to the team's notes outside it.
func TestDocsLinkInsideTheRepository(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(".")
	require.NoError(t, err)
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(path)
		if ext != ".md" && ext != ".go" && ext != ".yaml" && ext != ".py" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		require.NotContains(t, string(b), outsideNotes, "%s refers outside the repository", rel)
		if ext != ".md" {
			return nil
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			abs := filepath.Join(filepath.Dir(path), target)
			require.True(t, strings.HasPrefix(abs, root+string(filepath.Separator)), "%s links outside the repository: %s", rel, m[1])
			_, err := os.Stat(abs)
			require.NoError(t, err, "%s links to a missing file: %s", rel, m[1])
			checked++
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 30, "the walk finds the links")
}
