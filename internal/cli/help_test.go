package cli

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every help file is some command's long help or examples, and the
// soft-delete text is spliced in whole.
func TestHelpFilesAreUsed(t *testing.T) {
	texts := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		texts[c.Long], texts[c.Example] = true, true
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk((&app{}).rootCommand())
	names, err := fs.Glob(helpFiles, "help/*.txt")
	if err != nil || len(names) == 0 {
		t.Fatalf("help files: %v %v", names, err)
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "help/"), ".txt")
		if name == "soft-delete" {
			continue
		}
		if !texts[help(name)] {
			t.Errorf("%s is no command's help", n)
		}
	}
	if s := help("vault-set"); strings.Contains(s, "{{") || !strings.Contains(s, help("soft-delete")) {
		t.Errorf("vault-set's help lacks the soft-delete text:\n%s", s)
	}
}
