package projections

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/eventstore"
)

// Memory is the in-process read model keysd uses when it has no PostgreSQL: rebuilt from the
// stream at every start, and kept small enough that a million keys fit comfortably in a
// process under 1 GiB. It is safe for concurrent use; Apply excludes readers only for the
// time it takes to apply one batch.
type Memory struct {
	mu         sync.RWMutex
	checkpoint uint64
	projectIdx map[string]uint32 // interned project ids, keys of projects without a ProjectCreated too
	projects   []memProject      // by interned index
	keys       map[memKeyRef]*memKey
	oddKeys    map[memOddRef]*memKey     // keys whose id is not a canonical UUID
	byOwner    map[memOwnerRef][]*memKey // a user's or a team's keys, oldest first: by created_at, then creation sequence
	// scratch is the snapshot update applies an event to, and its times, reused so that an
	// update allocates nothing of its own; under mu.
	scratch                        domain.KeySnapshot
	scratchRevoked, scratchExpires time.Time
}

type memProject struct {
	id   string
	snap *domain.ProjectSnapshot // nil until its ProjectCreated
	seq  uint64                  // the stream sequence of its ProjectCreated
}

type memKeyRef struct {
	project uint32
	id      [16]byte
}

type memOddRef struct {
	project uint32
	id      string
}

type memOwnerRef struct {
	project uint32
	owner   string // the user or team id
	team    bool
}

// memKey is one key in about 150 bytes plus its owner's id and description: ids and hashes
// are kept as bytes, times as Unix milliseconds, and the rare key keyledger did not issue
// itself (an id that is not a UUID, a hash that is not hex) carries its text aside.
type memKey struct {
	uuid        [16]byte
	hash        [32]byte
	owner       string // the user id, or the team id with flagTeam; shared with its memOwnerRef
	description string
	odd         *memOdd
	createdAt   int64
	expiresAt   int64
	revokedAt   int64
	lastSeq     uint64
	createdSeq  uint64
	version     int32
	project     uint32
	lastFour    [4]byte
	lastFourLen uint8
	flags       uint8
}

// memOdd holds the text of fields that do not fit memKey's compact form.
type memOdd struct {
	id, hash, lastFour string
}

const (
	flagPublic = 1 << iota
	flagExpires
	flagRevoked
	flagOddID
	flagOddHash
	flagOddLastFour
	flagTeam // a team's key: owner is its team id
)

// NewMemory returns an empty in-process read model at checkpoint 0.
func NewMemory() *Memory {
	return &Memory{
		projectIdx: make(map[string]uint32),
		keys:       make(map[memKeyRef]*memKey),
		oddKeys:    make(map[memOddRef]*memKey),
		byOwner:    make(map[memOwnerRef][]*memKey),
	}
}

var _ ReadModel = (*Memory)(nil)

// Ping implements ReadModel: an in-process read model is always there.
func (m *Memory) Ping(context.Context) error { return nil }

// Apply implements ReadModel.
func (m *Memory) Apply(ctx context.Context, events []eventstore.RecordedEvent) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	todo, err := unapplied(m.checkpoint, events)
	if err != nil {
		return m.checkpoint, err
	}
	var refused []uint64
	for i := range todo {
		r := &todo[i]
		if r.Seq <= m.checkpoint {
			continue
		}
		m.checkpoint = r.Seq
		if r.Err != nil || r.Control {
			continue
		}
		if !m.applyOne(r) {
			refused = append(refused, r.Seq)
		}
	}
	reportRefused(ctx, refused)
	return m.checkpoint, nil
}

// applyKey applies a key event, and reports whether it changed the key (false: refused by
// evolveKey's rules).
func (m *Memory) applyKey(r eventstore.RecordedEvent) bool {
	idx := m.intern(r.Event.ProjectID)
	return m.applyKeyTo(idx, m.lookup(idx, r.Event.KeyID), r)
}

// applyKeyTo applies a key event of project idx to rec, the key's record (nil: none yet),
// and reports whether it changed the key.
func (m *Memory) applyKeyTo(idx uint32, rec *memKey, r eventstore.RecordedEvent) bool {
	if rec != nil {
		return m.update(rec, r)
	}
	next, ok := evolveKey(nil, r)
	if !ok {
		return false
	}
	rec = encode(idx, next)
	if rec.flags&flagOddID != 0 {
		m.oddKeys[memOddRef{idx, rec.odd.id}] = rec
	} else {
		m.keys[memKeyRef{idx, rec.uuid}] = rec
	}
	ref := memOwnerRef{idx, rec.owner, rec.flags&flagTeam != 0}
	list := m.byOwner[ref]
	i, _ := slices.BinarySearchFunc(list, rec, compareCreation)
	m.byOwner[ref] = slices.Insert(list, i, rec)
	return true
}

// update applies an event to an existing key in place, by evolveKey's rules, without
// expanding the record: only what an event can change of an existing key (its description,
// revocation and version) goes in and comes out. The id and project are the event's, which
// lookup matched exactly. No allocation but a changed description's copy.
func (m *Memory) update(rec *memKey, r eventstore.RecordedEvent) bool {
	next := &m.scratch
	*next = domain.KeySnapshot{ID: r.Event.KeyID, ProjectID: r.Event.ProjectID, Description: rec.description, Version: int(rec.version)}
	if rec.flags&flagRevoked != 0 {
		m.scratchRevoked = time.UnixMilli(rec.revokedAt).UTC()
		next.RevokedAt = &m.scratchRevoked
	}
	if rec.flags&flagExpires != 0 {
		m.scratchExpires = time.UnixMilli(rec.expiresAt).UTC()
		next.ExpiresAt = &m.scratchExpires
	}
	defer func() { *next = domain.KeySnapshot{} }() // keep no event's bytes alive
	if domain.EvolveSnapshot(next, r.Event) != nil {
		return false
	}
	if !storable(next.Description) {
		return false
	}
	// The owner index keeps pointing at rec.
	if rec.description != next.Description {
		rec.description = clone(next.Description)
	}
	rec.version = int32(next.Version)
	rec.lastSeq = r.Seq
	if next.RevokedAt != nil && rec.flags&flagRevoked == 0 {
		rec.flags |= flagRevoked
		rec.revokedAt = next.RevokedAt.UnixMilli()
	}
	rec.flags &^= flagExpires
	rec.expiresAt = 0
	if next.ExpiresAt != nil {
		rec.flags |= flagExpires
		rec.expiresAt = next.ExpiresAt.UnixMilli()
	}
	return true
}

// compareCreation orders keys oldest first.
func compareCreation(a, b *memKey) int {
	return cmp.Or(cmp.Compare(a.createdAt, b.createdAt), cmp.Compare(a.createdSeq, b.createdSeq))
}

// intern returns the index of a project id, adding it when new.
func (m *Memory) intern(projectID string) uint32 {
	if idx, ok := m.projectIdx[projectID]; ok {
		return idx
	}
	idx := uint32(len(m.projects))
	projectID = clone(projectID)
	m.projects = append(m.projects, memProject{id: projectID})
	m.projectIdx[projectID] = idx
	return idx
}

func (m *Memory) lookup(project uint32, keyID string) *memKey {
	if u, ok := parseUUID(keyID); ok {
		return m.keys[memKeyRef{project, u}]
	}
	return m.oddKeys[memOddRef{project, keyID}]
}

func encode(project uint32, s keyState) *memKey {
	rec := &memKey{
		owner:       clone(s.Owner()),
		description: clone(s.Description),
		createdAt:   s.CreatedAt.UnixMilli(),
		lastSeq:     s.LastSeq,
		createdSeq:  s.CreatedSeq,
		version:     int32(s.Version),
		project:     project,
	}
	var odd memOdd
	if u, ok := parseUUID(s.ID); ok {
		rec.uuid = u
	} else {
		rec.flags |= flagOddID
		odd.id = clone(s.ID)
	}
	if len(s.SecretHash) == 2*len(rec.hash) && isLowerHex(s.SecretHash) {
		_, _ = hex.Decode(rec.hash[:], []byte(s.SecretHash))
	} else {
		rec.flags |= flagOddHash
		odd.hash = clone(s.SecretHash)
	}
	if len(s.LastFour) <= len(rec.lastFour) {
		rec.lastFourLen = uint8(copy(rec.lastFour[:], s.LastFour))
	} else {
		rec.flags |= flagOddLastFour
		odd.lastFour = clone(s.LastFour)
	}
	if rec.flags&(flagOddID|flagOddHash|flagOddLastFour) != 0 {
		rec.odd = &odd
	}
	if s.IsPublic {
		rec.flags |= flagPublic
	}
	if s.Type() == domain.KeyTypeTeam {
		rec.flags |= flagTeam
	}
	if s.ExpiresAt != nil {
		rec.flags |= flagExpires
		rec.expiresAt = s.ExpiresAt.UnixMilli()
	}
	if s.RevokedAt != nil {
		rec.flags |= flagRevoked
		rec.revokedAt = s.RevokedAt.UnixMilli()
	}
	return rec
}

// decode expands a record; the caller holds m.mu.
func (m *Memory) decode(rec *memKey) keyState { return rec.state(m.projects[rec.project].id) }

// state expands a record of a key of project projectID.
func (rec *memKey) state(projectID string) keyState { return rec.stateWithID(projectID, "") }

// stateWithID is state with the key's id as the caller has it (in canonical form; "": the
// record's own), which saves formatting it again.
func (rec *memKey) stateWithID(projectID, keyID string) keyState {
	s := keyState{
		KeySnapshot: domain.KeySnapshot{
			ProjectID:   projectID,
			Description: rec.description,
			CreatedAt:   time.UnixMilli(rec.createdAt).UTC(),
			IsPublic:    rec.flags&flagPublic != 0,
			Version:     int(rec.version),
		},
		LastSeq:    rec.lastSeq,
		CreatedSeq: rec.createdSeq,
	}
	if rec.flags&flagTeam != 0 {
		s.TeamID = rec.owner
	} else {
		s.UserID = rec.owner
	}
	switch {
	case rec.flags&flagOddID != 0:
		s.ID = rec.odd.id
	case keyID != "":
		s.ID = keyID
	default:
		s.ID = formatUUID(rec.uuid)
	}
	if rec.flags&flagOddHash != 0 {
		s.SecretHash = rec.odd.hash
	} else {
		s.SecretHash = hex.EncodeToString(rec.hash[:])
	}
	if rec.flags&flagOddLastFour != 0 {
		s.LastFour = rec.odd.lastFour
	} else {
		s.LastFour = string(rec.lastFour[:rec.lastFourLen])
	}
	if rec.flags&flagExpires != 0 {
		t := time.UnixMilli(rec.expiresAt).UTC()
		s.ExpiresAt = &t
	}
	if rec.flags&flagRevoked != 0 {
		t := time.UnixMilli(rec.revokedAt).UTC()
		s.RevokedAt = &t
	}
	return s
}

// Checkpoint implements ReadModel.
func (m *Memory) Checkpoint(context.Context) (uint64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.checkpoint, nil
}

// Key implements ReadModel.
func (m *Memory) Key(_ context.Context, projectID, keyID string) (KeyView, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if idx, ok := m.projectIdx[projectID]; ok {
		if rec := m.lookup(idx, keyID); rec != nil {
			return m.decode(rec).view(), nil
		}
	}
	return KeyView{}, fmt.Errorf("key %s of project %s: %w", keyID, projectID, domain.ErrKeyNotFound)
}

// KeysByUser implements ReadModel.
func (m *Memory) KeysByUser(_ context.Context, projectID, userID string) ([]KeyView, error) {
	return m.keysByOwner(projectID, userID, false), nil
}

// KeysByTeam implements ReadModel.
func (m *Memory) KeysByTeam(_ context.Context, projectID, teamID string) ([]KeyView, error) {
	return m.keysByOwner(projectID, teamID, true), nil
}

// keysByOwner returns a user's or a team's keys, newest first.
func (m *Memory) keysByOwner(projectID, owner string, team bool) []KeyView {
	m.mu.RLock()
	defer m.mu.RUnlock()
	idx, ok := m.projectIdx[projectID]
	if !ok {
		return []KeyView{}
	}
	list := m.byOwner[memOwnerRef{idx, owner, team}]
	out := make([]KeyView, len(list))
	for i, rec := range list {
		out[len(list)-1-i] = m.decode(rec).view()
	}
	return out
}

// Project implements ReadModel.
func (m *Memory) Project(_ context.Context, projectID string) (domain.ProjectSnapshot, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if idx, ok := m.projectIdx[projectID]; ok && m.projects[idx].snap != nil {
		return *m.projects[idx].snap, nil
	}
	return domain.ProjectSnapshot{}, fmt.Errorf("project %s: %w", projectID, domain.ErrProjectNotFound)
}

// eachKeyChunk bounds how long EachKey holds the read lock at a time.
const eachKeyChunk = 1024

// EachKey implements ReadModel. fn runs without the lock held, so it may take its time and
// call the read model; keys are decoded a chunk at a time, each chunk as of one moment.
func (m *Memory) EachKey(ctx context.Context, fn func(KeyView) error) error {
	m.mu.RLock()
	recs := make([]*memKey, 0, len(m.keys)+len(m.oddKeys))
	for _, rec := range m.keys {
		recs = append(recs, rec)
	}
	for _, rec := range m.oddKeys {
		recs = append(recs, rec)
	}
	m.mu.RUnlock()
	views := make([]KeyView, 0, min(len(recs), eachKeyChunk))
	for chunk := range slices.Chunk(recs, eachKeyChunk) {
		if err := ctx.Err(); err != nil {
			return err
		}
		views = views[:0]
		m.mu.RLock()
		for _, rec := range chunk {
			views = append(views, m.decode(rec).view())
		}
		m.mu.RUnlock()
		for _, v := range views {
			if err := fn(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// eachState calls key for every key with its creation sequence (unless keys is false), and
// project (unless nil) for every project with the sequence of its creation, holding the read
// lock throughout: for Rebuild, which owns the Memory it loads from.
func (m *Memory) eachState(key func(keyState) error, project func(domain.ProjectSnapshot, uint64) error, keys bool) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, p := range m.projects {
		if p.snap != nil && project != nil {
			if err := project(*p.snap, p.seq); err != nil {
				return err
			}
		}
	}
	if !keys {
		return nil
	}
	for _, rec := range m.keys {
		if err := key(m.decode(rec)); err != nil {
			return err
		}
	}
	for _, rec := range m.oddKeys {
		if err := key(m.decode(rec)); err != nil {
			return err
		}
	}
	return nil
}

// eachKeyInOrder is eachState's keys in the order of the primary key (project id, key id)
// for the keys of canonical UUIDs, those of other ids after them, so that a COPY into a
// table with that primary key inserts its entries in order: PostgreSQL then fills its
// index's pages one after the other instead of splitting pages all over it (a COPY of
// 250,000 keys in the order of a map: about twice the time). It sorts a pointer a key
// (8 bytes) and expands each record as it goes.
func (m *Memory) eachKeyInOrder(key func(keyState) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	recs := make([]*memKey, 0, len(m.keys)+len(m.oddKeys))
	for _, rec := range m.keys {
		recs = append(recs, rec)
	}
	n := len(recs)
	for _, rec := range m.oddKeys {
		recs = append(recs, rec)
	}
	byProject := func(a, b *memKey) int {
		if a.project == b.project {
			return 0
		}
		return strings.Compare(m.projects[a.project].id, m.projects[b.project].id)
	}
	slices.SortFunc(recs[:n], func(a, b *memKey) int {
		if c := byProject(a, b); c != 0 {
			return c
		}
		return bytes.Compare(a.uuid[:], b.uuid[:]) // the canonical text's order
	})
	slices.SortFunc(recs[n:], func(a, b *memKey) int {
		if c := byProject(a, b); c != 0 {
			return c
		}
		return strings.Compare(a.odd.id, b.odd.id)
	})
	for _, rec := range recs {
		if err := key(m.decode(rec)); err != nil {
			return err
		}
	}
	return nil
}

// counts returns how many keys and projects the read model holds.
func (m *Memory) counts() (keys, projects int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, p := range m.projects {
		if p.snap != nil {
			projects++
		}
	}
	return len(m.keys) + len(m.oddKeys), projects
}

// clone copies a string the read model keeps: decoded events may share the bytes of their
// whole message (domain.UnmarshalEventShared), which a kept string would keep alive.
func clone(s string) string { return strings.Clone(s) }

// Close implements ReadModel; an in-process read model holds nothing to release.
func (m *Memory) Close() {}

// parseUUID accepts only the canonical lowercase form, so that formatUUID gives back the
// very same string; anything else is kept as text.
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	for j, i := range uuidByteOffsets {
		hi, ok1 := lowerHexVal(s[i])
		lo, ok2 := lowerHexVal(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
	}
	return u, true
}

// uuidByteOffsets are where each byte's two hex digits start in a canonical UUID.
var uuidByteOffsets = [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

func formatUUID(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

func lowerHexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if _, ok := lowerHexVal(s[i]); !ok {
			return false
		}
	}
	return true
}
