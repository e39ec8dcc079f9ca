package wire

import "fmt"

// Version is a protocol version: the major number in the high 16 bits, the
// minor number in the low 16 bits (the encoding of layout.Version). The
// handshake carries whole versions; every later frame header carries the
// negotiated major in one byte.
//
// A minor only adds: new message types, fields appended to a message, new
// flag bits, new error codes. A peer uses an addition only when the
// negotiated version has it, so a peer never receives a minor newer than it
// knows. Anything else (a changed or removed field, a changed frame header,
// a new meaning for a value) needs a new major. Once a major has a
// successor it gets no more minors, so a range [min, max] names exactly the
// versions a peer speaks.
type Version uint32

const (
	// V1_0 is the first protocol (PROTOCOL.md, "Version history").
	V1_0 Version = 0x0001_0000

	// Current is the newest version this build speaks, MinSupported the
	// oldest.
	Current      = V1_0
	MinSupported = V1_0
)

// MakeVersion builds a version from its major and minor numbers.
func MakeVersion(major, minor uint16) Version { return Version(major)<<16 | Version(minor) }

// Major returns the major number.
func (v Version) Major() uint16 { return uint16(v >> 16) }

// Minor returns the minor number.
func (v Version) Minor() uint16 { return uint16(v) }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major(), v.Minor()) }

// HeaderVersion is the byte a frame header carries once v is negotiated.
// Majors above 255 cannot be negotiated (Negotiate refuses them).
func (v Version) HeaderVersion() uint8 { return uint8(v.Major()) }

// Negotiate picks the version of a connection: the highest version both
// ranges hold. It reports false when the ranges do not overlap, when a
// range is empty (min > max), or when the chosen major does not fit the
// frame header's version byte (1 to 255).
func Negotiate(clientMin, clientMax, serverMin, serverMax Version) (Version, bool) {
	if clientMin > clientMax || serverMin > serverMax {
		return 0, false
	}
	v := min(clientMax, serverMax)
	if v < max(clientMin, serverMin) || v.Major() == 0 || v.Major() > 255 {
		return 0, false
	}
	return v, true
}

// VersionMismatchMessage is the text of the VERSION_MISMATCH error a server
// sends to a client whose range does not meet its own: both ranges, and
// which side to upgrade.
func VersionMismatchMessage(clientMin, clientMax, serverMin, serverMax Version) string {
	advice := "upgrade the client"
	if clientMin > serverMax {
		advice = "upgrade the Sluice workers"
	}
	return fmt.Sprintf("protocol version mismatch: client speaks %v to %v, server speaks %v to %v; %s",
		clientMin, clientMax, serverMin, serverMax, advice)
}
