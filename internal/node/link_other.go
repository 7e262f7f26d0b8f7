//go:build !linux

package node

import "errors"

// EnsureLink is only implemented on Linux, where podid agent runs; the stub
// keeps the package building on developer machines.
func EnsureLink(cfg LinkConfig) error {
	if _, _, _, err := cfg.resolved(); err != nil {
		return err
	}
	return errors.New("podid agent initialize is only supported on Linux")
}
