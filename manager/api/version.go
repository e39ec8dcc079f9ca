package api

import "fmt"

// Control-protocol versions this build speaks. Bump ProtocolVersionMax when
// adding something a peer of the previous version cannot ignore; raise
// ProtocolVersionMin when dropping support for old peers.
//
//	1: the first release.
const (
	ProtocolVersionMin uint32 = 1
	ProtocolVersionMax uint32 = 1
)

// LocalProtocol returns the range this build speaks.
func LocalProtocol() *ProtocolRange {
	return &ProtocolRange{Min: ProtocolVersionMin, Max: ProtocolVersionMax}
}

// Valid reports whether r is a non-empty range.
func (r *ProtocolRange) Valid() bool {
	return r != nil && r.Min >= 1 && r.Min <= r.Max
}

// Overlap returns the highest version both ranges contain, and false when
// they have none in common (or either is invalid).
func Overlap(a, b *ProtocolRange) (uint32, bool) {
	if !a.Valid() || !b.Valid() {
		return 0, false
	}
	hi := min(a.Max, b.Max)
	lo := max(a.Min, b.Min)
	if lo > hi {
		return 0, false
	}
	return hi, true
}

// ErrIncompatible describes why two protocol ranges do not overlap and
// which side to upgrade.
type ErrIncompatible struct {
	Local, Peer *ProtocolRange
	// LocalRole and PeerRole name the sides ("manager", "worker", "client").
	LocalRole, PeerRole string
}

func (e *ErrIncompatible) Error() string {
	if !e.Peer.Valid() {
		return fmt.Sprintf("the %s sent no valid protocol version range (got %v); this %s speaks %d..%d",
			e.PeerRole, rangeString(e.Peer), e.LocalRole, e.Local.GetMin(), e.Local.GetMax())
	}
	advice := ""
	switch {
	case e.Peer.Min > e.Local.Max:
		advice = fmt.Sprintf("upgrade the %s to a release that speaks protocol %d or later", e.LocalRole, e.Peer.Min)
	case e.Peer.Max < e.Local.Min:
		advice = fmt.Sprintf("upgrade the %s to a release that speaks protocol %d or later", e.PeerRole, e.Local.Min)
	}
	return fmt.Sprintf("protocol versions do not overlap: the %s speaks %d..%d, this %s %d..%d; %s",
		e.PeerRole, e.Peer.Min, e.Peer.Max, e.LocalRole, e.Local.GetMin(), e.Local.GetMax(), advice)
}

func rangeString(r *ProtocolRange) string {
	if r == nil {
		return "none"
	}
	return fmt.Sprintf("%d..%d", r.Min, r.Max)
}

// Negotiate returns the version local and peer will speak, or an
// *ErrIncompatible.
func Negotiate(local, peer *ProtocolRange, localRole, peerRole string) (uint32, error) {
	if v, ok := Overlap(local, peer); ok {
		return v, nil
	}
	return 0, &ErrIncompatible{Local: local, Peer: peer, LocalRole: localRole, PeerRole: peerRole}
}
