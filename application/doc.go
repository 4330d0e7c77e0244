// Package application turns an application description into a running
// application: its nodes (embedded NATS with JetStream, routed into one
// bus), its trusted services as enclave images (built from Go packages of
// the user's module, or prebuilt), a coordinator holding a manifest
// generated from the images' measurements and the rights the description
// declares, and its regular services — Go services the program registers
// (as Vert.x deploys verticles) and commands each node starts, supervises
// and points at its bus.
//
// A description (app.yaml) is decoded strictly; every error names the field
// and its line:
//
//	name: shop
//	state_dir: state            # keys, manifest, sealed storage, JetStream
//	program: .                  # the Go main package that registers Go services
//	images:
//	  vault: {package: ./vault} # a trusted image, built on first use
//	services:
//	  front: {}                 # a Go service: the program passes it to Start
//	  mailer: {command: [./mailer.sh]}   # started with NATS_URL set
//	addresses:
//	  front.hello: {consume: [front]}
//	  vault.put: {secured: true, clients: true, consume: [vault]}  # sealed; outside clients only
//	  orders:    {durable: true, consume: [mailer], send: [front]}
//	clients:
//	  meter-7: {key_file: meter-7.pem}   # made if missing
//
// Freshness (rollback protection of sealed state) is opt-in:
// coordinator: {freshness: true} runs the coordinator as replicas (3 with
// three nodes or more, else 1), one per coordinator node, and names the
// owner key of the state directory ([OwnerKeyFile]) in the manifest; only
// its holder can end a lost quorum ([Recover], 'cloister coordinator
// recover', or Config.Recover at start).
//
// Durability is a property of the address: every node of the application
// stores sends to a durable address in JetStream, whoever sends them.
//
// `cloister run app.yaml` runs a description: through its program when it
// has Go services (go run PROGRAM app.yaml, whose main calls [Main]), by
// itself otherwise. See SECURITY.md in the repository for what the
// simulated (process) backend does and does not protect.
package application
