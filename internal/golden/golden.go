// Package golden compares test output with committed golden files, for the
// packages whose reports are tested that way (report, session).
package golden

import (
	"bytes"
	"os"
	"testing"
)

// Check compares got with the file at path or, when update is set (the
// test's -update flag), rewrites the file with it. hint says how to
// rewrite it, e.g. "go test ./report -update".
func Check(t testing.TB, path string, got []byte, update bool, hint string) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (%s writes it)", err, hint)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (%s rewrites it after a deliberate change):\n%s", path, hint, FirstDiff(got, want))
	}
}

// FirstDiff shows where two outputs part, with 80 bytes around.
func FirstDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-80)
	return "got:  …" + string(got[lo:min(len(got), i+80)]) + "\nwant: …" + string(want[lo:min(len(want), i+80)])
}
