package indexcache

import "testing"

func TestDir(t *testing.T) {
	for _, c := range []struct {
		flag string
		env  map[string]string
		want string
	}{
		{"", map[string]string{"HOME": "/home/u"}, "/home/u/.cache/lifeboat"},
		{"", map[string]string{"HOME": "/home/u", "XDG_CACHE_HOME": "/xdg"}, "/xdg/lifeboat"},
		{"", map[string]string{"HOME": "/home/u", "LIFEBOAT_CACHE_DIR": "/env"}, "/env"},
		{"/flag", map[string]string{"LIFEBOAT_CACHE_DIR": "/env"}, "/flag"},
		{"off", map[string]string{"LIFEBOAT_CACHE_DIR": "/env"}, ""},
		{"", map[string]string{"LIFEBOAT_CACHE_DIR": "off", "HOME": "/home/u"}, ""},
		{"", nil, ""},
	} {
		if got := Dir(c.flag, func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("Dir(%q, %v) = %q, want %q", c.flag, c.env, got, c.want)
		}
	}
}
