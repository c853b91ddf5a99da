namespace Cowfish.Nbd;

/// <summary>
/// What serving cost the process, from the first request a worker took up to now: requests
/// answered, bytes the process allocated (every thread: workers, readers, the mapper, control
/// commands), garbage collections by generation, and the time the GC paused the process.
/// </summary>
public sealed record NbdServeStats(long Requests, long AllocatedBytes, int Gen0, int Gen1, int Gen2, TimeSpan GcPause)
{
    /// <summary>Bytes allocated per request answered (0 before the first request).</summary>
    public long BytesPerRequest => Requests == 0 ? 0 : AllocatedBytes / Requests;

    /// <summary>
    /// One line, the same shape whatever the numbers (docs/nbd.md), for instance
    /// <c>stats: 1200 requests, 3456789 bytes allocated (2880 per request), collections gen0 2 gen1 0 gen2 0, GC pause 1.234 ms</c>.
    /// </summary>
    public override string ToString() =>
        $"stats: {Requests} requests, {AllocatedBytes} bytes allocated ({BytesPerRequest} per request), " +
        $"collections gen0 {Gen0} gen1 {Gen1} gen2 {Gen2}, GC pause {GcPause.TotalMilliseconds:F3} ms";
}

/// <summary>
/// The process's allocation and GC counters when the first request reached a worker, and the
/// requests answered since; <see cref="NbdServer.Stats"/> subtracts them from the counters now.
/// </summary>
internal sealed class NbdServeBaseline
{
    // Guards the baseline (written once, by the worker that takes the first request) and _taken.
    private readonly object _gate = new();
    private long _requests;
    private long _allocated;
    private int _gen0, _gen1, _gen2;
    private TimeSpan _pause;
    private volatile bool _taken;

    /// <summary>Called by a worker as it takes a request; the first one takes the baseline.</summary>
    public void Starting()
    {
        if (_taken) return;
        lock (_gate)
        {
            if (_taken) return;
            _allocated = GC.GetTotalAllocatedBytes(precise: true);
            _gen0 = GC.CollectionCount(0);
            _gen1 = GC.CollectionCount(1);
            _gen2 = GC.CollectionCount(2);
            _pause = GC.GetTotalPauseDuration();
            _taken = true;
        }
    }

    /// <summary>Called by a worker once the request's reply is written.</summary>
    public void Answered() => Interlocked.Increment(ref _requests);

    public NbdServeStats Now()
    {
        lock (_gate)
        {
            if (!_taken) return new NbdServeStats(0, 0, 0, 0, 0, TimeSpan.Zero);
            return new NbdServeStats(Interlocked.Read(ref _requests),
                GC.GetTotalAllocatedBytes(precise: true) - _allocated,
                GC.CollectionCount(0) - _gen0, GC.CollectionCount(1) - _gen1, GC.CollectionCount(2) - _gen2,
                GC.GetTotalPauseDuration() - _pause);
        }
    }
}
