using System.Diagnostics;

namespace Cowfish;

/// <summary>
/// The phases of one request's life, as the slow-request log reports them. The engine marks the
/// ones it knows (<see cref="Lock"/> to <see cref="Flush"/>); a front end adds its own
/// (<see cref="Recv"/>, <see cref="Queued"/>, <see cref="Reply"/>).
/// </summary>
internal enum Phase
{
    /// <summary>None of the others: checks and bookkeeping between phases.</summary>
    Other,

    /// <summary>Reading a write's payload, and waiting for room in the connection's in-flight budget.</summary>
    Recv,

    /// <summary>Waiting for a worker thread.</summary>
    Queued,

    /// <summary>Waiting for the file's range lock.</summary>
    Lock,

    /// <summary>Reading: the edge blocks of a read-modify-write, or a read's data.</summary>
    Read,

    /// <summary>Reserving new blocks and writing the data there (copy-on-write).</summary>
    Cow,

    /// <summary>
    /// The mapping queue: admission to it, a mapping batch (waiting for it or applying it), a
    /// pending mapping of blocks about to be read, or settling the queue.
    /// </summary>
    Map,

    /// <summary>Committing a transaction, up to the point where it would wait for durability.</summary>
    Commit,

    /// <summary>Waiting for durability: the flush pair and superblock write, or another caller's.</summary>
    Flush,

    /// <summary>Writing the reply.</summary>
    Reply,
}

/// <summary>
/// Where one request's time went, phase by phase, on the thread that runs it. A front end starts a
/// recorder on its worker thread around a request; the engine marks phase boundaries with
/// <see cref="Enter"/> (a scope that returns to the enclosing phase when disposed) or
/// <see cref="Mark"/>. Every tick between <see cref="Start"/> and <see cref="Stop"/> is charged to
/// exactly one phase, so the phases add up to the time the request spent on the thread.
/// </summary>
/// <remarks>
/// With no recorder started on the thread, <see cref="Enter"/> and <see cref="Mark"/> read one
/// thread-static field and return: the engine pays nothing measurable when nobody asks. Nothing
/// here allocates after the recorder itself (one per worker thread, reused for every request).
/// </remarks>
internal sealed class PhaseRecorder
{
    public const int PhaseCount = (int)Phase.Reply + 1;

    // The recorder started on this thread, if any.
    [ThreadStatic] private static PhaseRecorder? t_active;

    private readonly long[] _ticks = new long[PhaseCount];
    private Phase _current;
    private long _since;

    /// <summary>Whether a recorder is started on the calling thread.</summary>
    public static bool Active => t_active is not null;

    /// <summary>
    /// Enters <paramref name="phase"/> until the returned scope is disposed, then returns to the
    /// phase the thread was in. Use with <c>using var</c>; a no-op when nothing records.
    /// </summary>
    public static Scope Enter(Phase phase)
    {
        var r = t_active;
        return r is null ? default : new Scope(r, r.Switch(phase));
    }

    /// <summary>Moves the calling thread's recorder (if any) into <paramref name="phase"/>.</summary>
    public static void Mark(Phase phase) => t_active?.Switch(phase);

    /// <summary>
    /// Clears the phases and starts recording on the calling thread, in <see cref="Phase.Other"/>;
    /// returns the time (a Stopwatch timestamp).
    /// </summary>
    public long Start()
    {
        Debug.Assert(t_active is null, "a recorder is already started on this thread");
        Array.Clear(_ticks);
        _current = Phase.Other;
        _since = Stopwatch.GetTimestamp();
        t_active = this;
        return _since;
    }

    /// <summary>Charges the current phase and stops recording; returns the time (a Stopwatch timestamp).</summary>
    public long Stop()
    {
        Debug.Assert(ReferenceEquals(t_active, this), "stopping a recorder that is not started on this thread");
        long now = Stopwatch.GetTimestamp();
        _ticks[(int)_current] += now - _since;
        t_active = null;
        return now;
    }

    /// <summary>Charges time measured elsewhere (before the request reached this thread) to a phase.</summary>
    public void Add(Phase phase, long ticks) => _ticks[(int)phase] += Math.Max(0, ticks);

    /// <summary>Stopwatch ticks charged to <paramref name="phase"/> since <see cref="Start"/>.</summary>
    public long this[Phase phase] => _ticks[(int)phase];

    private Phase Switch(Phase to)
    {
        long now = Stopwatch.GetTimestamp();
        _ticks[(int)_current] += now - _since;
        _since = now;
        var from = _current;
        _current = to;
        return from;
    }

    /// <summary>A phase entered with <see cref="Enter"/>; disposing it returns to the enclosing phase.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly PhaseRecorder? _recorder;
        private readonly Phase _resume;

        internal Scope(PhaseRecorder recorder, Phase resume)
        {
            _recorder = recorder;
            _resume = resume;
        }

        public void Dispose()
        {
            // Only while the same recording runs: a scope never charges a recorder stopped under it.
            if (_recorder is { } r && ReferenceEquals(t_active, r)) r.Switch(_resume);
        }
    }
}
