package projections

import "testing"

// The cache in front of PostgreSQL must behave as the read model does, reads right after each
// Apply included; a tiny cache also exercises eviction.
func TestKeyCacheOverPostgres(t *testing.T) {
	t.Run("large", func(t *testing.T) {
		runReadModelSuite(t, func(t *testing.T) ReadModel { return NewKeyCache(newPostgres(t), 10_000) })
	})
	t.Run("tiny", func(t *testing.T) {
		runReadModelSuite(t, func(t *testing.T) ReadModel { return NewKeyCache(newPostgres(t), 2) })
	})
}

func TestKeyCacheOverMemory(t *testing.T) {
	runReadModelSuite(t, func(t *testing.T) ReadModel { return NewKeyCache(NewMemory(), 10_000) })
}
