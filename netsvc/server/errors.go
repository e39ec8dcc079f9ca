package server

import (
	"context"
	"errors"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// op says what the server was doing when an engine error happened: the same
// engine error means different things to a writer and a reader.
type opKind uint8

const (
	opWrite opKind = iota // creating or writing a partition, committing
	opRead                // opening or reading a committed partition
)

// codeOf maps an engine error to the protocol's error code
// (PROTOCOL.md, "Error codes").
func codeOf(err error, op opKind) wire.Code {
	var we *wire.Error
	switch {
	case err == nil:
		return wire.CodeOK
	case errors.As(err, &we):
		return we.Code
	case errors.Is(err, engine.ErrClosed), errors.Is(err, mem.ErrClosed), errors.Is(err, context.Canceled):
		return wire.CodeShuttingDown
	case errors.Is(err, engine.ErrReleased):
		return wire.CodeReleased
	case errors.Is(err, engine.ErrNotFound):
		return wire.CodePartitionNotFound
	case errors.Is(err, engine.ErrNotFinalized):
		return wire.CodeNotReady
	case errors.Is(err, engine.ErrExists):
		return wire.CodePartitionExists
	case errors.Is(err, engine.ErrFinalized), errors.Is(err, engine.ErrConflict), errors.Is(err, engine.ErrAttemptClosed):
		return wire.CodeSuperseded
	case errors.Is(err, engine.ErrSeqGap):
		return wire.CodeOutOfOrder
	case errors.Is(err, engine.ErrDiskFull), errors.Is(err, engine.ErrNoDisk):
		return wire.CodeNoSpace
	case errors.Is(err, engine.ErrBadData):
		if errors.Is(err, layout.ErrCorrupt) {
			return wire.CodeCorruptData
		}
		return wire.CodeInvalidArgument
	case errors.Is(err, layout.ErrInvalid):
		return wire.CodeInvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		return wire.CodeTimeout
	}
	if op == opRead {
		// A committed partition the worker cannot serve: its data is lost
		// for the client (a disk error, corruption found on disk).
		return wire.CodeDataLost
	}
	if errors.Is(err, engine.ErrDiskFailed) || errors.Is(err, engine.ErrAborted) {
		return wire.CodeStorage
	}
	return wire.CodeStorage
}

// errMessage bounds an error's text to what an ERROR frame carries.
func errMessage(err error) string {
	s := err.Error()
	if len(s) > wire.MaxMessageSize {
		s = s[:wire.MaxMessageSize]
	}
	return s
}
