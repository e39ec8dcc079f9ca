// Package api is the Sluice control-plane API: the protobuf messages and gRPC
// services of manager.proto (generated code, committed), plus the small
// amount of hand-written code every peer of the manager needs:
//
//   - the protocol version range this build speaks (version.go);
//   - leader following (follow.go): a grpc.ClientConnInterface that sends
//     each call to the current leader, given a static list of manager
//     addresses or etcd endpoints, and that retries on NotLeader redirects
//     and unreachable managers (every RPC is idempotent);
//   - compatible-cluster discovery through etcd (discovery.go) and the etcd
//     key layout managers publish (keys.go);
//   - NotLeader status helpers (status.go).
//
// Workers (through manager/agent), the Go client and the Flink connector
// speak only this package; it imports nothing else of Sluice.
//
// # Regenerating the code
//
// With protoc (Debian: protobuf-compiler) and the Go plugins at the pinned
// versions on PATH:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//	PATH="$(go env GOPATH)/bin:$PATH" go generate ./manager/api
//
// # Reaching the leader from another language
//
// A client that does not link this package (the Java shuffle master) may
// send any call to any manager: a standby answers UNAVAILABLE with a
// NotLeader status detail and the trailer "sluice-leader: host:port"; the
// client retries there. With etcd it may instead read the leader's
// ManagerInfo (protojson) from the key <root>/clusters/<cluster>/leader.
package api

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative manager.proto
