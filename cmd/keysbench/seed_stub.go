package main

import (
	"context"
	"fmt"
	"io"
)

// runSeed stands in for the seed command, which is built on another branch; the merge
// replaces this file with seed.go.
func runSeed(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "keysbench seed: not built yet")
	return 1
}
