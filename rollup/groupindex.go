package rollup

import "github.com/cespare/xxhash/v2"

// groupIndex interns a rule shard's group keys to group ids. It maps the 64-bit hash
// of a key to its id, which costs a third less memory per group than a map keyed by
// the key itself; the rare key whose hash collides with another live key's goes to
// a second map keyed by the key. The keys themselves live in the shard's groupInfo.
// Not safe for concurrent use (a shard belongs to one partition goroutine).
type groupIndex struct {
	byHash   map[uint64]int32
	collided map[string]int32
}

func newGroupIndex() groupIndex { return groupIndex{byHash: map[uint64]int32{}} }

// get returns the id of key, checking the candidate against groups.
func (x *groupIndex) get(key []byte, groups []groupInfo) (int32, bool) {
	if id, ok := x.byHash[xxhash.Sum64(key)]; ok && groups[id].key == string(key) {
		return id, true
	}
	if x.collided != nil {
		id, ok := x.collided[string(key)]
		return id, ok
	}
	return 0, false
}

// put records id for key, which get did not find.
func (x *groupIndex) put(key string, id int32) {
	h := xxhash.Sum64String(key)
	if _, taken := x.byHash[h]; !taken {
		x.byHash[h] = id
		return
	}
	if x.collided == nil {
		x.collided = map[string]int32{}
	}
	x.collided[key] = id
}

// remove forgets key, whose id is id.
func (x *groupIndex) remove(key string, id int32) {
	h := xxhash.Sum64String(key)
	if cur, ok := x.byHash[h]; ok && cur == id {
		delete(x.byHash, h)
		return
	}
	delete(x.collided, key)
}

// len is the number of keys.
func (x *groupIndex) len() int { return len(x.byHash) + len(x.collided) }
