package node

import (
	"context"
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/provision"
)

// Metrics read at scrape time from what the node already counts.
var (
	descConsumerReceived = prometheus.NewDesc("cloister_bus_consumer_received_total",
		"Messages accepted into the buffers of this node's consumers, by address.", []string{"address"}, nil)
	descConsumerDelivered = prometheus.NewDesc("cloister_bus_consumer_delivered_total",
		"Messages handed to the handlers of this node's consumers, by address.", []string{"address"}, nil)
	descConsumerOverflowed = prometheus.NewDesc("cloister_bus_consumer_overflowed_total",
		"Messages refused because a consumer's buffer was full, by address.", []string{"address"}, nil)
	descConsumerRejected = prometheus.NewDesc("cloister_bus_consumer_rejected_total",
		"Messages vetoed by an inbound interceptor before a consumer's buffer, by address.", []string{"address"}, nil)
	descConsumerPending = prometheus.NewDesc("cloister_bus_consumer_buffered_messages",
		"Messages waiting in the buffers of this node's consumers now, by address.", []string{"address"}, nil)
	descConsumerPauses = prometheus.NewDesc("cloister_bus_consumer_pauses_total",
		"Times a consumer was paused (back-pressure), by address.", []string{"address"}, nil)
	descConsumerPaused = prometheus.NewDesc("cloister_bus_consumer_paused",
		"Consumers paused now, by address.", []string{"address"}, nil)
	descConsumers = prometheus.NewDesc("cloister_bus_consumers",
		"Consumers registered on this node, by address.", []string{"address"}, nil)

	descDeploymentUp = prometheus.NewDesc("cloister_node_deployment_up",
		"1 while a deployment is UP, 0 while it is DOWN (an enclave deployment while an instance restarts).", []string{"deployment"}, nil)

	descNATSConnected = prometheus.NewDesc("cloister_nats_connected",
		"1 while the node's NATS connection is up.", nil, nil)
	descNATSState = prometheus.NewDesc("cloister_nats_connection_state",
		"1 for the state the node's NATS connection is in now.", []string{"state"}, nil)
	descNATSReconnects = prometheus.NewDesc("cloister_nats_reconnects_total",
		"Reconnections of the node's NATS connection.", nil, nil)
	descDurablePending = prometheus.NewDesc("cloister_jetstream_pending_messages",
		"Messages of a durable address stored in JetStream and not yet delivered.", []string{"address"}, nil)
	descDurableAckPending = prometheus.NewDesc("cloister_jetstream_ack_pending_messages",
		"Messages of a durable address delivered and not yet acknowledged.", []string{"address"}, nil)
	descDurableRedelivered = prometheus.NewDesc("cloister_jetstream_redelivered_messages",
		"Messages of a durable address delivered more than once and not yet acknowledged.", []string{"address"}, nil)

	descEnclaveUp = prometheus.NewDesc("cloister_enclave_up",
		"1 while an enclave instance is up (serving), 0 otherwise.", []string{"enclave", "instance"}, nil)
	descEnclaveState = prometheus.NewDesc("cloister_enclave_state",
		"1 for the state an enclave instance is in now (new, starting, up, restarting, stopped).", []string{"enclave", "instance", "state"}, nil)
	descEnclaveRestarts = prometheus.NewDesc("cloister_enclave_restarts_total",
		"Restarts of an enclave instance by its supervisor.", []string{"enclave", "instance"}, nil)
	descEnclaveInFlight = prometheus.NewDesc("cloister_enclave_inflight_calls",
		"Requests waiting for an enclave instance's answer.", []string{"enclave", "instance"}, nil)
	descEnclaveFramesIn = prometheus.NewDesc("cloister_enclave_frames_in_total",
		"Boundary frames sent into the running enclave instance (calls and OCALL results); starts over at a restart.", []string{"enclave", "instance"}, nil)
	descEnclaveFramesOut = prometheus.NewDesc("cloister_enclave_frames_out_total",
		"Boundary frames the running enclave instance sent out (answers and OCALLs); starts over at a restart.", []string{"enclave", "instance"}, nil)
	descEnclaveWrites = prometheus.NewDesc("cloister_enclave_boundary_writes_total",
		"System-level writes carrying frames into the enclave instance: frames_in / writes is the batching factor.", []string{"enclave", "instance"}, nil)
	descEnclaveBytesIn = prometheus.NewDesc("cloister_enclave_boundary_in_bytes_total",
		"Bytes of the frames sent into the running enclave instance.", []string{"enclave", "instance"}, nil)
	descStoreReads = prometheus.NewDesc("cloister_enclave_store_reads_total",
		"Protected-storage reads (sealed blobs) of an enclave deployment's instances.", []string{"enclave"}, nil)
	descStoreWrites = prometheus.NewDesc("cloister_enclave_store_writes_total",
		"Protected-storage writes (sealed blobs) made durable for an enclave deployment.", []string{"enclave"}, nil)
	descStoreCommits = prometheus.NewDesc("cloister_enclave_store_commits_total",
		"Group commits (one fsync each) of an enclave deployment's protected storage: writes / commits is the batching factor.", []string{"enclave"}, nil)
	descStoreFailures = prometheus.NewDesc("cloister_enclave_store_failures_total",
		"Protected-storage reads and commits that failed, for an enclave deployment.", []string{"enclave"}, nil)
	descEnclaveRejections = prometheus.NewDesc("cloister_enclave_rejections_total",
		"Messages the trusted runtime of an enclave instance rejected on secured and client-channel addresses, by address and reason (counts only); starts over at a restart.",
		[]string{"enclave", "instance", "address", "reason"}, nil)

	descCoordinatorUp = prometheus.NewDesc("cloister_coordinator_up",
		"1 while the coordinator answers its status request.", nil, nil)
	descCoordinatorInfo = prometheus.NewDesc("cloister_coordinator_info",
		"The coordinator's manifest (hash, version), key epoch and evidence type, as labels; the value is 1.",
		[]string{"manifest_hash", "manifest_version", "epoch", "evidence_type"}, nil)
	descCoordinatorJoins = prometheus.NewDesc("cloister_coordinator_joins_total",
		"Joins the coordinator answered, by result (granted or refused).", []string{"result"}, nil)
)

// maxRejectionReasons bounds the reason labels taken from one enclave
// instance's answer, so that a misbehaving image cannot grow the label set.
const maxRejectionReasons = 32

// nodeCollector reads the node's counters at scrape time.
type nodeCollector struct{ o *ops }

// Describe sends nothing: the collector is unchecked, its label values
// (addresses, enclaves) come and go with deployments.
func (c *nodeCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.o.n
	ctx, cancel := context.WithTimeout(context.Background(), c.o.opts.CheckTimeout)
	defer cancel()
	c.collectConsumers(ch)
	for _, h := range n.Health(ctx) {
		ch <- prometheus.MustNewConstMetric(descDeploymentUp, prometheus.GaugeValue, b2f(h.Status == StatusUp), h.Name)
	}
	if cr, ok := n.bus.Transport().(bus.ConnectionReporter); ok {
		st := cr.Connection()
		ch <- prometheus.MustNewConstMetric(descNATSConnected, prometheus.GaugeValue, b2f(st.Connected))
		ch <- prometheus.MustNewConstMetric(descNATSState, prometheus.GaugeValue, 1, st.State)
		ch <- prometheus.MustNewConstMetric(descNATSReconnects, prometheus.CounterValue, float64(st.Reconnects))
	}
	if dr, ok := n.bus.Transport().(bus.DurableReporter); ok {
		stats, err := dr.DurableStats(ctx)
		if err != nil {
			n.logger.Warn("node: metrics: durable backlog", "error", err)
		}
		for a, s := range stats {
			ch <- prometheus.MustNewConstMetric(descDurablePending, prometheus.GaugeValue, float64(s.Pending), a)
			ch <- prometheus.MustNewConstMetric(descDurableAckPending, prometheus.GaugeValue, float64(s.AckPending), a)
			ch <- prometheus.MustNewConstMetric(descDurableRedelivered, prometheus.GaugeValue, float64(s.Redelivered), a)
		}
	}
	c.collectEnclaves(ctx, ch)
	if c.o.opts.Coordinator {
		st, err := n.coordinatorStatus(ctx)
		ch <- prometheus.MustNewConstMetric(descCoordinatorUp, prometheus.GaugeValue, b2f(err == nil))
		if err == nil {
			ch <- prometheus.MustNewConstMetric(descCoordinatorInfo, prometheus.GaugeValue, 1,
				st.ManifestHash, strconv.FormatUint(st.ManifestVersion, 10), strconv.FormatUint(uint64(st.Epoch), 10), st.EvidenceType)
			ch <- prometheus.MustNewConstMetric(descCoordinatorJoins, prometheus.CounterValue, float64(st.Joins), "granted")
			ch <- prometheus.MustNewConstMetric(descCoordinatorJoins, prometheus.CounterValue, float64(st.Refusals), "refused")
		}
	}
}

// collectConsumers sums the stats of the node's consumers by address.
func (c *nodeCollector) collectConsumers(ch chan<- prometheus.Metric) {
	type sum struct {
		st       bus.ConsumerStats
		n, pause int
	}
	by := map[string]*sum{}
	for _, cs := range c.o.n.bus.Consumers() {
		s := by[cs.Address()]
		if s == nil {
			s = &sum{}
			by[cs.Address()] = s
		}
		st := cs.Stats()
		s.n++
		s.st.Received += st.Received
		s.st.Handled += st.Handled
		s.st.Overflowed += st.Overflowed
		s.st.Rejected += st.Rejected
		s.st.Pending += st.Pending
		s.st.Pauses += st.Pauses
		if st.Paused {
			s.pause++
		}
	}
	for a, s := range by {
		ch <- prometheus.MustNewConstMetric(descConsumers, prometheus.GaugeValue, float64(s.n), a)
		ch <- prometheus.MustNewConstMetric(descConsumerReceived, prometheus.CounterValue, float64(s.st.Received), a)
		ch <- prometheus.MustNewConstMetric(descConsumerDelivered, prometheus.CounterValue, float64(s.st.Handled), a)
		ch <- prometheus.MustNewConstMetric(descConsumerOverflowed, prometheus.CounterValue, float64(s.st.Overflowed), a)
		ch <- prometheus.MustNewConstMetric(descConsumerRejected, prometheus.CounterValue, float64(s.st.Rejected), a)
		ch <- prometheus.MustNewConstMetric(descConsumerPending, prometheus.GaugeValue, float64(s.st.Pending), a)
		ch <- prometheus.MustNewConstMetric(descConsumerPauses, prometheus.CounterValue, float64(s.st.Pauses), a)
		ch <- prometheus.MustNewConstMetric(descConsumerPaused, prometheus.GaugeValue, float64(s.pause), a)
	}
}

// collectEnclaves reports every enclave instance; the rejection counters
// cost one Health call into each running instance.
func (c *nodeCollector) collectEnclaves(ctx context.Context, ch chan<- prometheus.Metric) {
	stores := map[*meteredStore]string{}
	for _, es := range c.o.n.enclaveServices() {
		if es.svc.store != nil {
			stores[es.svc.store] = es.name
		}
	}
	for st, name := range stores {
		ch <- prometheus.MustNewConstMetric(descStoreReads, prometheus.CounterValue, float64(st.reads.Load()), name)
		ch <- prometheus.MustNewConstMetric(descStoreWrites, prometheus.CounterValue, float64(st.writes.Load()), name)
		ch <- prometheus.MustNewConstMetric(descStoreCommits, prometheus.CounterValue, float64(st.commits.Load()), name)
		ch <- prometheus.MustNewConstMetric(descStoreFailures, prometheus.CounterValue, float64(st.failures.Load()), name)
	}
	for _, es := range c.o.n.enclaveServices() {
		e, name, inst := es.svc.e, es.name, strconv.Itoa(es.index)
		state := e.State().String()
		ch <- prometheus.MustNewConstMetric(descEnclaveUp, prometheus.GaugeValue, b2f(state == "up"), name, inst)
		ch <- prometheus.MustNewConstMetric(descEnclaveState, prometheus.GaugeValue, 1, name, inst, state)
		ch <- prometheus.MustNewConstMetric(descEnclaveRestarts, prometheus.CounterValue, float64(e.Restarts()), name, inst)
		ch <- prometheus.MustNewConstMetric(descEnclaveInFlight, prometheus.GaugeValue, float64(e.InFlight()), name, inst)
		st := e.Stats()
		ch <- prometheus.MustNewConstMetric(descEnclaveFramesIn, prometheus.CounterValue, float64(st.FramesSent), name, inst)
		ch <- prometheus.MustNewConstMetric(descEnclaveFramesOut, prometheus.CounterValue, float64(st.FramesReceived), name, inst)
		ch <- prometheus.MustNewConstMetric(descEnclaveWrites, prometheus.CounterValue, float64(st.Writes), name, inst)
		ch <- prometheus.MustNewConstMetric(descEnclaveBytesIn, prometheus.CounterValue, float64(st.BytesSent), name, inst)
		if state != "up" {
			continue
		}
		rej, err := e.Rejections(ctx)
		if err != nil {
			c.o.n.logger.Debug("node: metrics: enclave rejections", "enclave", e.Name(), "error", err)
			continue
		}
		// Only the addresses the instance serves label its rejections,
		// and only so many reasons: the answer comes from the image.
		serving := map[string]bool{}
		for _, a := range e.Addresses() {
			serving[a] = true
		}
		reasons := map[string]bool{}
		sums := map[[2]string]uint64{}
		addrs := make([]string, 0, len(rej))
		for a := range rej {
			addrs = append(addrs, a)
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			label := a
			if !serving[a] {
				label = OtherAddress
			}
			for reason, count := range rej[a] {
				if !reasons[reason] && len(reasons) >= maxRejectionReasons {
					reason = "other"
				}
				reasons[reason] = true
				sums[[2]string{label, reason}] += count
			}
		}
		for k, count := range sums {
			ch <- prometheus.MustNewConstMetric(descEnclaveRejections, prometheus.CounterValue, float64(count), name, inst, k[0], k[1])
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// coordinatorStatus asks the coordinator for its status over the bus.
func (n *Node) coordinatorStatus(ctx context.Context) (*provision.Status, error) {
	return client.CoordinatorStatus(ctx, n.bus, n.opsOpts.CheckTimeout)
}
