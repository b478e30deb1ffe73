package rollup

import (
	"testing"

	"github.com/cespare/xxhash/v2"
)

func TestGroupIndex(t *testing.T) {
	x := newGroupIndex()
	groups := []groupInfo{{key: "a"}, {key: "b"}, {key: "c"}}
	if _, ok := x.get([]byte("a"), groups); ok {
		t.Fatal("empty index found a key")
	}
	x.put("a", 0)
	// Make "b" collide with "a": its hash slot holds a's id.
	x.byHash[xxhash.Sum64String("b")] = 0
	if _, ok := x.get([]byte("b"), groups); ok {
		t.Fatal("a colliding hash returned another key's id")
	}
	x.put("b", 1)
	x.put("c", 2)
	for i, k := range []string{"a", "b", "c"} {
		if id, ok := x.get([]byte(k), groups); !ok || id != int32(i) {
			t.Fatalf("get(%s) = %d %v, want %d", k, id, ok, i)
		}
	}
	if len(x.collided) != 1 {
		t.Fatalf("collided holds %d keys, want 1", len(x.collided))
	}
	x.remove("b", 1)
	if _, ok := x.get([]byte("b"), groups); ok {
		t.Fatal("removed colliding key still found")
	}
	if id, ok := x.get([]byte("a"), groups); !ok || id != 0 {
		t.Fatal("removing the colliding key lost the other")
	}
	delete(x.byHash, xxhash.Sum64String("b")) // undo the forced collision
	x.remove("a", 0)
	x.remove("c", 2)
	if x.len() != 0 {
		t.Fatalf("len %d after removing everything", x.len())
	}
}
