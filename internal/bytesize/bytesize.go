// Package bytesize reads and writes byte counts as people give and read
// them: "256K", "1M", "4MiB" in, "1.50 MiB" out (binary units both ways).
package bytesize

import (
	"fmt"
	"strings"
)

// Parse parses "256K", "1M", "4MiB", "2GB", "65536": a positive whole
// number, optionally with K, M or G (powers of 1024), optionally followed
// by B or iB, in any case.
func Parse(s string) (int, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := 1
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	var n int
	if _, err := fmt.Sscanf(t, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != t {
		return 0, fmt.Errorf("invalid size %q (examples: 256K, 1M, 4MiB)", s)
	}
	return n * mult, nil
}

// Format writes n bytes in binary units: "512 B", "1.50 KiB", "2.00 GiB".
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
