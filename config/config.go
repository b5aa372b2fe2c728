// Package config reads memdiag's YAML configuration: the rules that name
// operations' categories. Errors carry the file and line they come from.
//
//	categories:
//	  - name: api_records
//	    http: { method: GET, path_prefix: /api/records }
//	  - name: gun_sync
//	    outbound: { port: 8765 }   # a cycle = calls with gaps shorter than cycle_gap
//	    cycle_gap: 5s
//	  - name: peer_sync           # a WebSocket route: each message is an op...
//	    http: { path_prefix: /gun }
//	    cycle_gap: 1s             # ...unless grouped into bursts (gaps < 1s)
//	  - name: other               # no matcher: catches every op left
//
// Rules are tried in order; the first match wins. An op no rule matches is
// named automatically (normalized route, or outbound destination).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is a parsed configuration.
type Config struct {
	Categories []Category
}

// Category is one rule: a name and what it matches.
type Category struct {
	Name     string
	HTTP     *HTTPMatch     // served requests
	Outbound *OutboundMatch // outbound calls
	// CycleGap groups ops of this category whose gaps are shorter than it
	// into one cycle, counted as one op: outbound calls (a sync cycle), or
	// served ops (a burst of a WebSocket peer's messages).
	CycleGap time.Duration
	Line     int // where the rule starts in its file
}

// HTTPMatch matches served requests; empty fields match anything.
type HTTPMatch struct {
	Method     string
	PathPrefix string
	PathRegex  *regexp.Regexp
}

// OutboundMatch matches outbound calls; empty fields match anything.
type OutboundMatch struct {
	Host       netip.Addr // invalid: any
	Port       uint16     // 0: any
	PathPrefix string
}

// Error is a configuration error at a line of a file.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Load reads and parses a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	return Parse(path, data)
}

// maxCategories bounds a configuration.
const maxCategories = 256

// Parse parses configuration text; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	fail := func(n *yaml.Node, format string, args ...any) error {
		line := 0
		if n != nil {
			line = n.Line
		}
		return &Error{File: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if err.Error() == "EOF" {
			return nil, &Error{File: name, Msg: "empty configuration: expected a 'categories:' list"}
		}
		return nil, yamlError(name, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fail(&doc, "expected a mapping with a 'categories:' list")
	}
	top := doc.Content[0]
	cfg := &Config{}
	seen := map[string]int{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Value != "categories" {
			return nil, fail(k, "unknown key %q (expected 'categories')", k.Value)
		}
		if v.Kind != yaml.SequenceNode {
			return nil, fail(v, "'categories' must be a list")
		}
		if len(v.Content) > maxCategories {
			return nil, fail(v, "too many categories (%d, at most %d)", len(v.Content), maxCategories)
		}
		for _, item := range v.Content {
			c, err := parseCategory(item, fail)
			if err != nil {
				return nil, err
			}
			if prev, dup := seen[c.Name]; dup && !sameKind(cfg.Categories[prev], c) {
				return nil, fail(item, "category %q is defined twice with different kinds", c.Name)
			}
			seen[c.Name] = len(cfg.Categories)
			cfg.Categories = append(cfg.Categories, c)
		}
	}
	return cfg, nil
}

func sameKind(a, b Category) bool { return (a.Outbound != nil) == (b.Outbound != nil) }

// yamlError turns a YAML syntax error ("yaml: line 3: ...") into an Error.
func yamlError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(n); err == nil {
				return &Error{File: name, Line: line, Msg: tail}
			}
		}
	}
	return &Error{File: name, Msg: msg}
}

type failFunc func(n *yaml.Node, format string, args ...any) error

func parseCategory(n *yaml.Node, fail failFunc) (Category, error) {
	c := Category{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		return c, fail(n, "each category must be a mapping with a 'name'")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "name":
			c.Name, err = scalar(v, fail, "name")
			if err == nil && (c.Name == "" || len(c.Name) > 64 || strings.ContainsAny(c.Name, "\n\r\t\"")) {
				err = fail(v, "category names are 1 to 64 characters, no quotes or control characters")
			}
		case "http":
			c.HTTP, err = parseHTTP(v, fail)
		case "outbound":
			c.Outbound, err = parseOutbound(v, fail)
		case "cycle_gap":
			var s string
			if s, err = scalar(v, fail, "cycle_gap"); err == nil {
				c.CycleGap, err = time.ParseDuration(s)
				if err != nil || c.CycleGap <= 0 {
					err = fail(v, "cycle_gap must be a positive duration like 5s, got %q", s)
				}
			}
		default:
			err = fail(k, "unknown key %q in a category (expected name, http, outbound, cycle_gap)", k.Value)
		}
		if err != nil {
			return c, err
		}
	}
	switch {
	case c.Name == "":
		return c, fail(n, "category without a 'name'")
	case c.HTTP != nil && c.Outbound != nil:
		return c, fail(n, "category %q has both 'http' and 'outbound': use two categories", c.Name)
	case c.CycleGap > 0 && c.Outbound == nil && c.HTTP == nil:
		return c, fail(n, "category %q has cycle_gap but no 'outbound' or 'http' matcher: cycles group outbound calls, or served ops such as a WebSocket connection's messages", c.Name)
	}
	return c, nil
}

func scalar(v *yaml.Node, fail failFunc, what string) (string, error) {
	if v.Kind != yaml.ScalarNode {
		return "", fail(v, "%s must be a single value", what)
	}
	return v.Value, nil
}

func parseHTTP(n *yaml.Node, fail failFunc) (*HTTPMatch, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fail(n, "'http' must be a mapping like { path_prefix: /api }")
	}
	m := &HTTPMatch{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		s, err := scalar(v, fail, k.Value)
		if err != nil {
			return nil, err
		}
		switch k.Value {
		case "method":
			m.Method = strings.ToUpper(s)
		case "path_prefix":
			if !strings.HasPrefix(s, "/") {
				return nil, fail(v, "path_prefix must start with '/', got %q", s)
			}
			m.PathPrefix = s
		case "path_regex":
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fail(v, "path_regex does not compile: %v", err)
			}
			m.PathRegex = re
		default:
			return nil, fail(k, "unknown key %q in 'http' (expected method, path_prefix, path_regex)", k.Value)
		}
	}
	return m, nil
}

func parseOutbound(n *yaml.Node, fail failFunc) (*OutboundMatch, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fail(n, "'outbound' must be a mapping like { port: 9200 }")
	}
	m := &OutboundMatch{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		s, err := scalar(v, fail, k.Value)
		if err != nil {
			return nil, err
		}
		switch k.Value {
		case "host":
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fail(v, "host must be an IP address (memdiag sees addresses, not names), got %q", s)
			}
			m.Host = a.Unmap()
		case "port":
			p, err := strconv.ParseUint(s, 10, 16)
			if err != nil || p == 0 {
				return nil, fail(v, "port must be a number from 1 to 65535, got %q", s)
			}
			m.Port = uint16(p)
		case "path_prefix":
			if !strings.HasPrefix(s, "/") {
				return nil, fail(v, "path_prefix must start with '/', got %q", s)
			}
			m.PathPrefix = s
		default:
			return nil, fail(k, "unknown key %q in 'outbound' (expected host, port, path_prefix)", k.Value)
		}
	}
	return m, nil
}
