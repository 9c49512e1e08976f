package projections

import (
	"context"
	"crypto/rand"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// openPostgres opens a PostgreSQL read model for a test and closes it after.
func openPostgres(t testing.TB, url string, cfg PostgresConfig) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := OpenPostgres(ctx, url, cfg)
	if err != nil {
		t.Fatalf("open PostgreSQL read model: %v", err)
	}
	t.Cleanup(pg.Close)
	return pg
}

// newUUID returns a random (version 4) UUID in canonical form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// describeKey (as readmodeltest's) renders every field of the key (all of KeySnapshot's, so that a field a new
// event type adds is compared too), times with their zone, so that two views compare equal
// exactly when they are the same key at the same instants, in UTC.
func describeKey(v KeyView) string {
	var b strings.Builder
	s := reflect.ValueOf(v.KeySnapshot)
	b.WriteString("{")
	for i := range s.NumField() {
		f := s.Field(i)
		fmt.Fprintf(&b, "%s:", s.Type().Field(i).Name)
		switch x := f.Interface().(type) {
		case time.Time:
			b.WriteString(describeTime(&x))
		case *time.Time:
			b.WriteString(describeTime(x))
		case string:
			fmt.Fprintf(&b, "%q", x)
		default:
			fmt.Fprintf(&b, "%v", x)
		}
		b.WriteString(" ")
	}
	fmt.Fprintf(&b, "LastSeq:%d}", v.LastSeq)
	return b.String()
}

func describeTime(t *time.Time) string {
	if t == nil {
		return "null"
	}
	return t.Format(time.RFC3339Nano) + "@" + t.Location().String()
}
