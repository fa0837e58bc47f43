package cli

import (
	"embed"
	"strings"
)

// The commands' long help and examples, in help/NAME.txt and
// help/NAME.example.txt (NAME: the command's path, dashed).
//
//go:embed help/*.txt
var helpFiles embed.FS

// help is the text of help/name.txt, without its final newline; a line
// {{soft-delete}} in it stands for help/soft-delete.txt, said wherever the
// window is set.
func help(name string) string {
	b, err := helpFiles.ReadFile("help/" + name + ".txt")
	if err != nil {
		panic(err) // a help file missing from the binary is a build defect
	}
	s := strings.TrimSuffix(string(b), "\n")
	if name != "soft-delete" {
		s = strings.ReplaceAll(s, "{{soft-delete}}", help("soft-delete"))
	}
	return s
}
