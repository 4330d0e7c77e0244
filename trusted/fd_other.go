//go:build !unix

package trusted

func setNonblock(int) error { return nil }
