namespace Cowfish.Nbd;

/// <summary>
/// A fixed set of threads that execute NBD requests from every connection. Requests block in the
/// engine (device I/O, the writer lock, group commit), so they run on dedicated threads rather than
/// the thread pool, whose growth is too slow for a burst of blocked work. Concurrent writes then
/// share mapping transactions and flushes.
/// </summary>
internal sealed class NbdWorkers : IDisposable
{
    // Guards _queue and _stopped; workers wait on it.
    private readonly object _gate = new();
    private readonly Queue<NbdRequest> _queue = new();
    private readonly Thread[] _threads;
    private bool _stopped;

    public NbdWorkers(int count)
    {
        _threads = new Thread[Math.Max(1, count)];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"nbd-worker-{i}" };
            _threads[i].Start();
        }
    }

    public void Enqueue(NbdRequest request)
    {
        lock (_gate)
        {
            if (_stopped) throw new ObjectDisposedException(nameof(NbdWorkers));
            _queue.Enqueue(request);
            Monitor.Pulse(_gate);
        }
    }

    private void Run()
    {
        // One per thread, reused by every request this thread runs (for the slow-request log).
        var phases = new PhaseRecorder();
        while (true)
        {
            NbdRequest request;
            lock (_gate)
            {
                while (_queue.Count == 0 && !_stopped) Monitor.Wait(_gate);
                if (_queue.Count == 0) return;
                request = _queue.Dequeue();
            }
            request.Execute(phases);
        }
    }

    /// <summary>Lets the queued requests finish, then ends the threads.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _stopped = true;
            Monitor.PulseAll(_gate);
        }
        foreach (var t in _threads) t.Join();
    }
}
