package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollector_HA(t *testing.T) {
	b := fullStats(time.Now())
	c := NewCollector(func() (Bridge, Conn) { return b, fakeConn{nats.CONNECTED, 0} })
	want := `
# HELP ami_bridge_ha_active With HA: 1 while this process is the PBX's active bridge, 0 while standby.
# TYPE ami_bridge_ha_active gauge
ami_bridge_ha_active{server="pbx1"} 1
# HELP ami_bridge_ha_takeovers_total With HA: times this process became the PBX's active bridge.
# TYPE ami_bridge_ha_takeovers_total counter
ami_bridge_ha_takeovers_total{server="pbx1"} 2
# HELP ami_bridge_ha_gaps_total With HA: Ami-Seq ranges this process found lost at a takeover (the new active could not find the stream's last event in its buffer).
# TYPE ami_bridge_ha_gaps_total counter
ami_bridge_ha_gaps_total{server="pbx1"} 1
`
	// pbx2 runs without HA: it has none of these.
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "ami_bridge_ha_active", "ami_bridge_ha_takeovers_total", "ami_bridge_ha_gaps_total"); err != nil {
		t.Error(err)
	}
}
