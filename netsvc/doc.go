// Package netsvc is Sluice's data plane: the framed binary protocol between
// clients and workers (specified in PROTOCOL.md beside this file, encoded
// and decoded by netsvc/wire), the worker's server and the client transport.
//
// Clients never import layout: the stored buffer and segment formats that
// travel in data frames, and their checksums, are reached through
// netsvc/wire.
package netsvc
