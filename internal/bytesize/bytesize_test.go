package bytesize

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]int{"65536": 65536, "256K": 256 << 10, "256k": 256 << 10, "1M": 1 << 20, "4MiB": 4 << 20,
		"2GB": 2 << 30, " 8m ": 8 << 20, "1KB": 1024} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1K", "1.5M", "1T", "K", "12 M", "1e3", "0x10", "01K"} {
		if n, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, n)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.00 KiB", 1536: "1.50 KiB", 1 << 20: "1.00 MiB",
		5 << 30: "5.00 GiB", 1 << 40: "1.00 TiB", 1<<62 + 1<<61: "6.00 EiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
