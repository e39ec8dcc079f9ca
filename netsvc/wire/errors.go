package wire

import (
	"errors"
	"fmt"
	"strconv"
)

// Code is an error code of the protocol, carried by ERROR frames (and as
// the reason of CLOSE_CHANNEL). The values are part of the protocol and
// never change. A Code is itself an error, so errors.Is(err, CodeMalformed)
// tests an *Error's code.
type Code uint16

// Error codes of protocol 1.0 (PROTOCOL.md, "Error codes").
const (
	CodeOK Code = 0 // only as the reason of CLOSE_CHANNEL: a normal close

	// Connection errors: the sender closes the connection after the ERROR.
	CodeProtocol       Code = 1 // the handshake or connection rules were broken
	CodeBadMagic       Code = 2 // HELLO does not start with the magic
	CodeVersion        Code = 3 // no common protocol version
	CodeAuthFailed     Code = 4 // the auth token is missing or wrong
	CodeBadHeaderCRC   Code = 5 // a frame header failed its CRC: framing is lost
	CodeFrameTooLarge  Code = 6 // a body length above the receiver's limit
	CodeIdleTimeout    Code = 7 // nothing received for the idle timeout
	CodeShuttingDown   Code = 8 // the worker is stopping (connection or channel)
	codeConnectionLast Code = 15

	// Frame errors: the frame was well framed (its body skipped) but wrong.
	CodeUnknownType     Code = 16
	CodeMalformed       Code = 17
	CodeBadBodyCRC      Code = 18
	CodeOutOfOrder      Code = 19
	CodeChannelInUse    Code = 20
	CodeCreditExceeded  Code = 21
	CodeTooManyChannels Code = 22

	// Partition errors.
	CodeCorruptData       Code = 32 // a stored buffer or segment from the client failed its CRCs
	CodeInvalidArgument   Code = 33
	CodePartitionNotFound Code = 34
	CodePartitionExists   Code = 35
	CodeNotReady          Code = 36
	CodeSuperseded        Code = 37
	CodeReleased          Code = 38
	CodeDataLost          Code = 39
	CodeStorage           Code = 40
	CodeNoSpace           Code = 41
	CodeOverloaded        Code = 42
	CodeTimeout           Code = 43
	CodeInternal          Code = 63
)

type codeInfo struct {
	name      string
	retryable bool
}

var codeInfos = map[Code]codeInfo{
	CodeOK:                {"OK", false},
	CodeProtocol:          {"PROTOCOL", false},
	CodeBadMagic:          {"BAD_MAGIC", false},
	CodeVersion:           {"VERSION_MISMATCH", false},
	CodeAuthFailed:        {"AUTH_FAILED", false},
	CodeBadHeaderCRC:      {"BAD_HEADER_CRC", true},
	CodeFrameTooLarge:     {"FRAME_TOO_LARGE", false},
	CodeIdleTimeout:       {"IDLE_TIMEOUT", true},
	CodeShuttingDown:      {"SHUTTING_DOWN", true},
	CodeUnknownType:       {"UNKNOWN_TYPE", false},
	CodeMalformed:         {"MALFORMED", false},
	CodeBadBodyCRC:        {"BAD_BODY_CRC", true},
	CodeOutOfOrder:        {"OUT_OF_ORDER", false},
	CodeChannelInUse:      {"CHANNEL_IN_USE", false},
	CodeCreditExceeded:    {"CREDIT_EXCEEDED", false},
	CodeTooManyChannels:   {"TOO_MANY_CHANNELS", true},
	CodeCorruptData:       {"CORRUPT_DATA", true},
	CodeInvalidArgument:   {"INVALID_ARGUMENT", false},
	CodePartitionNotFound: {"PARTITION_NOT_FOUND", false},
	CodePartitionExists:   {"PARTITION_EXISTS", false},
	CodeNotReady:          {"NOT_READY", true},
	CodeSuperseded:        {"SUPERSEDED", false},
	CodeReleased:          {"RELEASED", false},
	CodeDataLost:          {"DATA_LOST", false},
	CodeStorage:           {"STORAGE_ERROR", true},
	CodeNoSpace:           {"NO_SPACE", true},
	CodeOverloaded:        {"OVERLOADED", true},
	CodeTimeout:           {"TIMEOUT", true},
	CodeInternal:          {"INTERNAL", true},
}

// Known reports whether c is a code of this build.
func (c Code) Known() bool { _, ok := codeInfos[c]; return ok }

// Name is the code's name in PROTOCOL.md.
func (c Code) Name() string {
	if i, ok := codeInfos[c]; ok {
		return i.name
	}
	return "CODE_" + strconv.Itoa(int(c))
}

func (c Code) String() string { return c.Name() }

// Error makes a Code usable as a sentinel error.
func (c Code) Error() string { return "wire: " + c.Name() }

// Retryable reports whether the operation that failed with c may succeed
// when it is tried again (on a new channel, maybe a new connection or
// another worker). For a code this build does not know, the ERROR frame's
// retryable flag decides.
func (c Code) Retryable() bool { return codeInfos[c].retryable }

// ConnectionFatal reports whether c always ends the connection.
func (c Code) ConnectionFatal() bool {
	return c >= CodeProtocol && c <= codeConnectionLast && c != CodeShuttingDown
}

// Codes returns every known code in ascending order.
func Codes() []Code {
	var cs []Code
	for c := range 1 << 16 {
		if Code(c).Known() {
			cs = append(cs, Code(c))
		}
	}
	return cs
}

// Sentinels for the decoding errors this package returns; each matches an
// *Error with errors.Is.
var (
	ErrMalformed   error = CodeMalformed     // a body or header field is invalid
	ErrTooLarge    error = CodeFrameTooLarge // a length above a limit
	ErrUnknownType error = CodeUnknownType   // a message type this build does not know
	ErrVersion     error = CodeVersion       // a version byte or range this build does not speak
	// ErrBadCRC matches both a header and a body CRC mismatch.
	ErrBadCRC = errors.New("wire: bad CRC")
)

// Error is a protocol error found while decoding a frame: the code to send
// back in an ERROR frame, the channel it concerns, and whether the
// connection must close (the framing can no longer be trusted, or the
// error concerns the connection itself). An *Error matches its Code (and
// ErrBadCRC for either CRC code) with errors.Is.
type Error struct {
	Code    Code
	Channel uint32
	Fatal   bool
	Msg     string
}

func (e *Error) Error() string {
	scope := "connection"
	if e.Channel != 0 {
		scope = "channel " + strconv.FormatUint(uint64(e.Channel), 10)
	}
	s := fmt.Sprintf("wire: %s on %s: %s", e.Code.Name(), scope, e.Msg)
	if e.Fatal {
		s += " (connection closes)"
	}
	return s
}

// Is matches the error's code, and ErrBadCRC for CRC mismatches.
func (e *Error) Is(target error) bool {
	if c, ok := target.(Code); ok {
		return c == e.Code
	}
	return target == ErrBadCRC && (e.Code == CodeBadHeaderCRC || e.Code == CodeBadBodyCRC)
}

func errorf(code Code, channel uint32, format string, args ...any) *Error {
	return &Error{Code: code, Channel: channel, Fatal: code.ConnectionFatal(), Msg: fmt.Sprintf(format, args...)}
}

// malformed is the error of a body decoder; the caller sets the channel.
func malformed(t Type, format string, args ...any) *Error {
	return &Error{Code: CodeMalformed, Msg: t.String() + ": " + fmt.Sprintf(format, args...)}
}
