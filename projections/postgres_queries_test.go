package projections

import (
	"reflect"
	"testing"
)

// TestKeyColumnsAreOneDefinition checks that the row struct, its scan targets and the COPY
// values follow keyColumns, the one column list of api_keys.
func TestKeyColumnsAreOneDefinition(t *testing.T) {
	typ := reflect.TypeOf(keyRow{})
	if typ.NumField() != len(keyColumns) {
		t.Fatalf("keyRow has %d fields, keyColumns %d columns", typ.NumField(), len(keyColumns))
	}
	var row keyRow
	targets := row.targets()
	values := rowValues(keyState{}, make([]any, len(keyColumns)))
	if len(targets) != len(keyColumns) || len(values) != len(keyColumns) {
		t.Fatalf("targets %d, values %d, columns %d", len(targets), len(values), len(keyColumns))
	}
	for i, c := range keyColumns {
		f := typ.Field(i)
		if tag := f.Tag.Get("db"); tag != c.name {
			t.Errorf("keyRow field %d (%s) is column %q, keyColumns says %q", i, f.Name, tag, c.name)
		}
		if got := reflect.TypeOf(targets[i]).Elem(); got != f.Type {
			t.Errorf("scan target %d is %s, field %s is %s", i, got, f.Name, f.Type)
		}
		if got, want := reflect.TypeOf(values[i]), f.Type; got != want {
			t.Errorf("COPY value %d (%s) is %v, the column's field is %s", i, c.name, got, want)
		}
	}
}
