package rollup

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// Checkpoint file format (part of the on-disk format; see doc.go):
//
//	magic "VGRLCKP1" (8 bytes) | crc32c of body (4 bytes LE) | body length (8 bytes LE) | body
//
// body is a gob-encoded checkpointData. The file is written to "checkpoint.tmp",
// fsynced, renamed to "checkpoint" and the directory fsynced, so a crash leaves either
// the old or the new checkpoint, never a mix.
const (
	checkpointMagic = "VGRLCKP1"
	checkpointName  = "checkpoint"
	checkpointVer   = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptCheckpoint reports a checkpoint file that fails its checksum or does not
// decode. The engine then starts from the beginning of the retained log.
var ErrCorruptCheckpoint = errors.New("rollup: corrupt checkpoint")

// checkpointData is one consistent cut of the engine: every partition's state at its
// input offset, the coordinator's state after exactly the reports those partitions had
// sent, and the end offset of the rollups topic at that moment.
type checkpointData struct {
	Version       int
	Partitions    int
	ResultsOffset int64
	Parts         [][]byte // gob partSnap per partition
	Coord         []byte   // gob coordSnap
}

type partSnap struct {
	Offset int64
	MaxT   int64
	Rules  []shardSnap
}

type shardSnap struct {
	Name        string
	Fingerprint uint32
	Sealed      int64
	Sent        int64
	Windows     []windowSnap
	Carries     map[uint64]carry
	Forced      []sealMark
}

type windowSnap struct {
	Start int64
	Keys  []string // group keys in touched order
	Accs  []acc
}

type coordSnap struct {
	Rules []coordRuleSnap
}

type coordRuleSnap struct {
	Name        string
	Fingerprint uint32
	Sealed      []int64
	Pending     map[int64][][]groupPartial
	Cum         map[string]*cumState
	LastEmitted int64
	Marks       []sealMark
}

// snapshot encodes the partition's state. It runs in the partition's goroutine.
func (p *partition) snapshot() ([]byte, error) {
	ps := partSnap{Offset: p.offset, MaxT: p.maxT}
	for _, rs := range p.rules {
		ss := shardSnap{Name: rs.r.name, Fingerprint: rs.r.fingerprint, Sealed: rs.sealed, Sent: rs.sent, Carries: rs.carries, Forced: rs.forced}
		for _, w := range rs.windows {
			ws := windowSnap{Start: w.start}
			for _, g := range w.touched {
				ws.Keys = append(ws.Keys, rs.groups[g].key)
				ws.Accs = append(ws.Accs, *w.acc(g))
			}
			ss.Windows = append(ss.Windows, ws)
		}
		ps.Rules = append(ps.Rules, ss)
	}
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(&ps); err != nil {
		return nil, fmt.Errorf("encode partition %d state: %w", p.id, err)
	}
	return b.Bytes(), nil
}

// restore loads a partition snapshot; shards of rules that are gone or changed are
// dropped.
func (p *partition) restore(b []byte) error {
	var ps partSnap
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&ps); err != nil {
		return fmt.Errorf("%w: partition %d: %v", ErrCorruptCheckpoint, p.id, err)
	}
	p.offset, p.maxT = ps.Offset, ps.MaxT
	byName := map[string]*shardSnap{}
	for i := range ps.Rules {
		byName[ps.Rules[i].Name] = &ps.Rules[i]
	}
	for _, rs := range p.rules {
		ss := byName[rs.r.name]
		if ss == nil || ss.Fingerprint != rs.r.fingerprint {
			if ps.MaxT != noWatermark {
				rs.sealed = rs.r.sealedBoundary(ps.MaxT - rs.r.lateness)
			}
			continue
		}
		rs.sealed, rs.sent, rs.forced = ss.Sealed, ss.Sent, ss.Forced
		if ss.Carries != nil {
			rs.carries = ss.Carries
		}
		for _, ws := range ss.Windows {
			w := rs.newWindow(ws.Start)
			for i, k := range ws.Keys {
				g := rs.groupID([]byte(k))
				*w.acc(g) = ws.Accs[i]
				w.touched = append(w.touched, g)
			}
			rs.windows = append(rs.windows, w)
		}
	}
	return nil
}

func (c *coordinator) snapshot() ([]byte, error) {
	var cs coordSnap
	for _, cr := range c.rules {
		cs.Rules = append(cs.Rules, coordRuleSnap{Name: cr.r.name, Fingerprint: cr.r.fingerprint, Sealed: cr.sealed,
			Pending: cr.pending, Cum: cr.cum, LastEmitted: cr.lastEmitted, Marks: cr.marks})
	}
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(&cs); err != nil {
		return nil, fmt.Errorf("encode coordinator state: %w", err)
	}
	return b.Bytes(), nil
}

func (c *coordinator) restore(b []byte) error {
	var cs coordSnap
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&cs); err != nil {
		return fmt.Errorf("%w: coordinator: %v", ErrCorruptCheckpoint, err)
	}
	byName := map[string]*coordRuleSnap{}
	for i := range cs.Rules {
		byName[cs.Rules[i].Name] = &cs.Rules[i]
	}
	for _, cr := range c.rules {
		s := byName[cr.r.name]
		if s == nil || s.Fingerprint != cr.r.fingerprint || len(s.Sealed) != c.parts {
			continue
		}
		cr.sealed, cr.lastEmitted = s.Sealed, s.LastEmitted
		if s.Pending != nil {
			cr.pending = s.Pending
		}
		if s.Cum != nil {
			cr.cum = s.Cum
		}
		if len(s.Marks) == c.parts {
			cr.marks = s.Marks
		}
	}
	return nil
}

// writeCheckpoint writes d atomically into dir and returns the file's size.
func writeCheckpoint(dir string, d *checkpointData) (int, error) {
	n := 0
	err := func() error {
		var body bytes.Buffer
		if err := gob.NewEncoder(&body).Encode(d); err != nil {
			return fmt.Errorf("encode checkpoint: %w", err)
		}
		buf := make([]byte, 0, 20+body.Len())
		buf = append(buf, checkpointMagic...)
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(body.Bytes(), castagnoli))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(body.Len()))
		buf = append(buf, body.Bytes()...)

		tmp := filepath.Join(dir, checkpointName+".tmp")
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("create checkpoint %s: %w", tmp, err)
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return fmt.Errorf("write checkpoint %s (%d bytes): %w", tmp, len(buf), err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("sync checkpoint %s: %w", tmp, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close checkpoint %s: %w", tmp, err)
		}
		final := filepath.Join(dir, checkpointName)
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("rename checkpoint to %s: %w", final, err)
		}
		n = len(buf)
		return syncDir(dir)
	}()
	return n, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open checkpoint dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync checkpoint dir %s: %w", dir, err)
	}
	return nil
}

// readCheckpoint reads dir's checkpoint; it returns nil, nil when there is none.
func readCheckpoint(dir string) (*checkpointData, error) {
	path := filepath.Join(dir, checkpointName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	return decodeCheckpoint(b)
}

func decodeCheckpoint(b []byte) (*checkpointData, error) {
	if len(b) < 20 || string(b[:8]) != checkpointMagic {
		return nil, fmt.Errorf("%w: bad header", ErrCorruptCheckpoint)
	}
	sum := binary.LittleEndian.Uint32(b[8:])
	n := binary.LittleEndian.Uint64(b[12:])
	body := b[20:]
	if n != uint64(len(body)) {
		return nil, fmt.Errorf("%w: body is %d bytes, header says %d", ErrCorruptCheckpoint, len(body), n)
	}
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptCheckpoint)
	}
	var d checkpointData
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptCheckpoint, err)
	}
	if d.Version != checkpointVer {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrCorruptCheckpoint, d.Version, checkpointVer)
	}
	return &d, nil
}
