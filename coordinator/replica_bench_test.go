package coordinator_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/provision"
)

// BenchmarkReplicaJoin measures a join (challenge, evidence, grant,
// opening it) against a group of 1 and of 3 replicas, each on its own
// node of a NATS cluster, with a manifest that declares freshness.
func BenchmarkReplicaJoin(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			rs := newReplicaSetN(b, n)
			rs.waitLive()
			rs.setManifest(rs.freshManifest(1))
			for b.Loop() {
				if err := rs.tryJoin(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReplicaRestart measures how long a replica takes from kill -9
// (the supervisor's 20 ms backoff and a new process included) to live again (admitted by the others; with one replica, until the
// owner's recovery statement, sent as soon as it asks for one), and a
// lone coordinator without freshness from kill -9 to answering.
func BenchmarkReplicaRestart(b *testing.B) {
	b.Run("lone", func(b *testing.B) {
		s := newBenchSystem(b)
		for b.Loop() {
			settle(b)
			pid := s.coordinatorPID()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				b.Fatal(err)
			}
			for {
				if p := s.coordinatorPID(); p != 0 && p != pid {
					if _, err := s.call(provision.AddressStatus, nil); err == nil {
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
	})
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			rs := newReplicaSetN(b, n)
			rs.waitLive()
			rs.setManifest(rs.freshManifest(1))
			m := parseManifest(b, rs.freshManifest(1))
			slot := 0
			for b.Loop() {
				settle(b)
				slot = (slot + 1) % n
				pid := rs.pid(slot)
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					b.Fatal(err)
				}
				for {
					st, err := rs.replica(slot)
					if err == nil && rs.pid(slot) != pid {
						if st.State == provision.ReplicaLive {
							break
						}
						if st.State == provision.ReplicaNeedsRecovery {
							rs.recover(m, slot)
							continue
						}
					}
					time.Sleep(2 * time.Millisecond)
				}
			}
		})
	}
}

// settle waits, off the clock, longer than the supervisor's maximum
// restart backoff, so that every restart measured starts from the
// shortest backoff (20 ms) rather than one grown by the previous kill.
func settle(b *testing.B) {
	b.StopTimer()
	time.Sleep(250 * time.Millisecond)
	b.StartTimer()
}

// waitLive waits until every replica is live.
func (rs *replicaSet) waitLive() {
	slots := make([]int, len(rs.nodes))
	for i := range slots {
		slots[i] = i
	}
	rs.waitState(provision.ReplicaLive, slots...)
}
