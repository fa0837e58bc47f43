package job

import (
	"errors"
	"testing"
)

func TestParseListen(t *testing.T) {
	tests := []struct {
		in, network, addr string
		bad               bool
	}{
		{in: "unix:/run/web1.sock", network: "unix", addr: "/run/web1.sock"},
		{in: "127.0.0.1:10809", network: "tcp", addr: "127.0.0.1:10809"},
		{in: "[::1]:0", network: "tcp", addr: "[::1]:0"},
		{in: "unix:", bad: true},
		{in: "", bad: true},
		{in: "/run/web1.sock", bad: true},
		{in: "localhost", bad: true},
		{in: "host:", bad: true},
	}
	for _, tc := range tests {
		network, addr, err := ParseListen(tc.in)
		if (err != nil) != tc.bad || network != tc.network || addr != tc.addr {
			t.Errorf("ParseListen(%q) = %q, %q, %v", tc.in, network, addr, err)
		}
	}
}

func TestExportValidate(t *testing.T) {
	ok := Export{Machine: "web1", Point: "latest", Vault: "/srv/vault", Listen: "unix:/run/x.sock"}
	for name, e := range map[string]Export{
		"machine":     {Machine: "../x", Point: "latest", Vault: "/v", Listen: "unix:/x"},
		"point":       {Machine: "web1", Vault: "/v", Listen: "unix:/x"},
		"vault":       {Machine: "web1", Point: "latest", Listen: "unix:/x"},
		"listen":      {Machine: "web1", Point: "latest", Vault: "/v", Listen: "nowhere"},
		"disk":        {Machine: "web1", Point: "latest", Vault: "/v", Listen: "unix:/x", Disk: "a/b"},
		"overlay_dir": {Machine: "web1", Point: "latest", Vault: "/v", Listen: "unix:/x", OverlayDir: "/tmp"},
		"cache_mib":   {Machine: "web1", Point: "latest", Vault: "/v", Listen: "unix:/x", CacheMiB: -1},
	} {
		var ie *InvalidError
		if err := e.Validate(); !errors.As(err, &ie) || ie.Field != name {
			t.Errorf("%+v: Validate = %v, want an error on %s", e, err, name)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("a good export: %v", err)
	}
}
