package relay

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/pipeline"
)

// DescribeTimeout bounds each of Describe's requests: a publisher answers
// from memory in a round trip, and an API listing every stream must not
// wait long for one that is going away.
const DescribeTimeout = 500 * time.Millisecond

// Describe asks stream's publisher for its track list and its job's
// statistics as of now, without subscribing to any media: what a node's API
// shows for a stream it does not follow (node.follow: on_demand). Both
// requests go out at once, each bounded by DescribeTimeout (or ctx). When no
// publisher answers, it fails with ErrStreamNotFound. During a failover the
// two answers may come from different publishers; info.Instance says whose
// tracks they are.
func Describe(ctx context.Context, nc *nats.Conn, stream string) (info StreamInfo, stats pipeline.SourceStats, err error) {
	if err := pipeline.ValidStreamName(stream); err != nil {
		return StreamInfo{}, pipeline.SourceStats{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, DescribeTimeout)
	defer cancel()
	prefix := mediaPrefix(stream)
	var st StreamStatus
	var tracksErr, statusErr error
	var wg sync.WaitGroup
	wg.Go(func() { tracksErr = requestJSON(rctx, nc, prefix+subjTracks, &info) })
	wg.Go(func() { statusErr = requestJSON(rctx, nc, prefix+subjStatus, &st) })
	wg.Wait()
	// One error is enough: without a publisher both fail the same way.
	if err := cmp.Or(tracksErr, statusErr); err != nil {
		return StreamInfo{}, pipeline.SourceStats{}, fmt.Errorf("describe %s: %w", stream, err)
	}
	return info, st.Stats, nil
}

// requestJSON sends an empty request to subject and decodes the reply into
// v. No responder, or none in time, is ErrStreamNotFound.
func requestJSON(ctx context.Context, nc *nats.Conn, subject string, v any) error {
	reply, err := nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %s: %w", ErrStreamNotFound, subject, err)
		}
		return fmt.Errorf("%s: %w", subject, err)
	}
	if err := json.Unmarshal(reply.Data, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrWire, subject, err)
	}
	return nil
}
