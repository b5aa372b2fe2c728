package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// deleteWhere deletes the entries of m that match accepts: it lists them
// first (deleting while iterating a hash map can skip or repeat entries),
// then deletes them; an entry gone meanwhile is no error. what names the
// entries in errors ("regions").
func deleteWhere[K, V any](m *ebpf.Map, what string, match func(K, V) bool) error {
	var (
		k    K
		v    V
		gone []K
		errs []error
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if match(k, v) {
			gone = append(gone, k)
		}
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("reading %s: %w", what, err))
	}
	for i := range gone {
		if err := m.Delete(&gone[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", what, err))
		}
	}
	return errors.Join(errs...)
}
