package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseExample(t *testing.T) {
	cfg, err := Load("../examples/classic-categories.yaml")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]Category{}
	for _, c := range cfg.Categories {
		names[c.Name] = c
	}
	for _, want := range []string{"api_records", "api_voice", "api_alfred", "gun_sync", "elasticsearch_query", "graphql_query", "static_media", "gun_deletion", "keepdb_cycle", "other"} {
		if _, ok := names[want]; !ok {
			t.Errorf("example config lacks %s", want)
		}
	}
	if g := names["gun_sync"]; g.Outbound == nil || g.Outbound.Port != 8765 || g.CycleGap != time.Second {
		t.Errorf("gun_sync = %+v", g)
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"categories:\n  - name: a\n    http: { path_prefix: api }\n", "c.yaml:3: path_prefix must start with '/'"},
		{"categories:\n  - name: a\n    cycle_gap: 5s\n", "c.yaml:2: category \"a\" has cycle_gap but no 'outbound' or 'http'"},
		{"categories:\n  - http: {}\n", "c.yaml:2: category without a 'name'"},
		{"categories:\n  - name: a\n    outbound: { port: 70000 }\n", "c.yaml:3: port must be a number"},
		{"categories:\n  - name: a\n    outbound: { host: es.local }\n", "c.yaml:3: host must be an IP address"},
		{"categories:\n  - name: a\n    http: { path_regex: '(' }\n", "c.yaml:3: path_regex does not compile"},
		{"categories:\n  - name: a\n    colour: red\n", "c.yaml:3: unknown key \"colour\""},
		{"cats: []\n", "c.yaml:1: unknown key \"cats\""},
		{"categories: [\n", "c.yaml:"},
		{"", "c.yaml: empty configuration"},
		{"categories:\n  - name: a\n    cycle_gap: soon\n    outbound: {}\n", "c.yaml:3: cycle_gap must be a positive duration"},
	} {
		_, err := Parse("c.yaml", []byte(tc.in))
		var ce *Error
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error starting %q", tc.in, err, tc.want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml: cannot read") {
		t.Fatalf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	data, _ := os.ReadFile("../examples/classic-categories.yaml")
	f.Add(data)
	f.Add([]byte("categories:\n  - name: x\n    http: { method: get, path_regex: '^/a' }\n"))
	f.Add([]byte("categories: [{name: y, outbound: {port: 1, host: '::1'}, cycle_gap: 1ms}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse("f.yaml", b)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for _, c := range cfg.Categories {
			if c.Name == "" || (c.HTTP != nil && c.Outbound != nil) {
				t.Fatalf("invalid category accepted: %+v", c)
			}
		}
	})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"50MB": 50 << 20, "10m": 10 << 20, "1.5GiB": 3 << 29, "4096": 4096, "2 KB": 2048, "0": 0} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1MB", "5XB", "1e400"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}
