package policy

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

const (
	day   = 24 * time.Hour
	week  = 7 * day
	month = 30 * day  // for durations only; buckets use calendar months
	year  = 365 * day // for durations only; buckets use calendar years
)

// durationUnits lists the units of the extended form, largest first; a
// duration must use them in this order, each at most once.
var durationUnits = []struct {
	name string
	d    time.Duration
}{
	{"y", year},
	{"m", month}, // "m" is a month before any w, d or h, a minute after
	{"w", week},
	{"d", day},
	{"h", time.Hour},
	{"m", time.Minute},
	{"s", time.Second},
	{"ms", time.Millisecond},
	{"us", time.Microsecond},
	{"ns", time.Nanosecond},
}

const (
	rankMonth  = 1
	rankWeek   = 2
	rankMinute = 5
)

// ParseDuration parses a KeepWithin duration. It accepts:
//
//   - every non-negative Go duration (time.ParseDuration), such as "90m",
//     "36h" or "1h30m"; in these "m" is minutes;
//   - otherwise the extended form: a sequence of <number><unit> with the
//     units y (365 days), m (30 days), w (7 days), d (24 hours), h, m, s,
//     ms, us, ns, largest first and each at most once, such as "7d", "2w",
//     "1y2m3d4h", "1.5d" or "1d12h30m".
//
// In the extended form "m" means months until a w, d or h has appeared and
// minutes after: "1y2m3d" is a year, two months and three days, "3d30m" is
// three days and thirty minutes. A bare "2m" is a Go duration: two minutes;
// write "60d" or "2m0d" for two months.
//
// Negative durations, an empty string and durations that overflow
// time.Duration (about 292 years) are errors.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("policy: empty duration")
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("policy: invalid duration %q: negative", s)
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	return parseExtended(s)
}

func parseExtended(s string) (time.Duration, error) {
	bad := func(format string, args ...any) (time.Duration, error) {
		return 0, fmt.Errorf("policy: invalid duration %q: %s", s, fmt.Sprintf(format, args...))
	}
	total := new(big.Rat)
	rest := strings.TrimPrefix(s, "+")
	lastRank := -1
	for rest != "" {
		// Number: digits, optionally with a fraction.
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		num := rest[:i]
		if num == "" || num == "." || strings.Count(num, ".") > 1 {
			return bad("expected a number at %q", rest)
		}
		rest = rest[i:]
		// Unit: everything up to the next number.
		j := 0
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		unit := rest[:j]
		rest = rest[j:]
		if unit == "" {
			return bad("missing unit after %q (use y, m, w, d, h, m, s)", num)
		}
		if unit == "µs" || unit == "μs" { // micro sign, Greek mu
			unit = "us"
		}
		rank := -1
		for k, u := range durationUnits {
			if u.name != unit {
				continue
			}
			if unit == "m" && (k == rankMonth) != (lastRank < rankWeek) {
				continue // the other "m"
			}
			rank = k
			break
		}
		if rank < 0 {
			return bad("unknown unit %q (use y, m, w, d, h, m, s)", unit)
		}
		if rank <= lastRank {
			return bad("unit %q out of order (largest first, each once)", unit)
		}
		lastRank = rank

		v, ok := parseDecimal(num)
		if !ok {
			return bad("bad number %q", num)
		}
		v.Mul(v, new(big.Rat).SetInt64(int64(durationUnits[rank].d)))
		total.Add(total, v)
		if total.Cmp(new(big.Rat).SetInt64(math.MaxInt64)) > 0 {
			return bad("too long (at most about 292 years)")
		}
	}
	// Truncate to whole nanoseconds.
	ns := new(big.Int).Quo(total.Num(), total.Denom())
	return time.Duration(ns.Int64()), nil
}

// parseDecimal parses "12", "1.5", "1." or ".5" exactly.
func parseDecimal(s string) (*big.Rat, bool) {
	intPart, frac, _ := strings.Cut(s, ".")
	if intPart == "" {
		intPart = "0"
	}
	v, ok := new(big.Rat).SetString(intPart)
	if !ok {
		return nil, false
	}
	if frac != "" {
		f, ok := new(big.Int).SetString(frac, 10)
		if !ok {
			return nil, false
		}
		scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
		v.Add(v, new(big.Rat).SetFrac(f, scale))
	}
	return v, true
}

// FormatDuration writes d in a form ParseDuration reads back, using days
// but never months or years, which are ambiguous to a reader: "7d",
// "1d12h", "90d", "30m", "1h30m", "1d0.5s".
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return d.String()
	}
	var b strings.Builder
	if days := d / day; days > 0 {
		b.WriteString(strconv.FormatInt(int64(days), 10) + "d")
	}
	rem := d % day
	if h := rem / time.Hour; h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "h")
	}
	rem %= time.Hour
	if m := rem / time.Minute; m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "m")
	}
	rem %= time.Minute
	if rem > 0 {
		sec := strconv.FormatInt(int64(rem/time.Second), 10)
		if frac := rem % time.Second; frac > 0 {
			sec += strings.TrimRight(fmt.Sprintf(".%09d", int64(frac)), "0")
		}
		b.WriteString(sec + "s")
	}
	return b.String()
}
