namespace Cowfish.Files;

/// <summary>
/// A counting semaphore that admits waiters first come, first served, and wakes exactly the
/// waiters it admits: each waits on its own (thread-static) waiter object, so freeing a slot costs
/// one wake-up, not a stampede of every waiting thread through a shared lock that the thread
/// freeing slots needs as well. Allocation-free.
/// </summary>
internal sealed class FairSlots(int slots)
{
    private sealed class Waiter
    {
        public bool Admitted;
    }

    // Guards _free and _waiters.
    private readonly object _gate = new();
    private readonly Queue<Waiter> _waiters = new();
    private int _free = slots;

    [ThreadStatic] private static Waiter? t_waiter;

    /// <summary>Takes a slot, waiting behind everyone who asked earlier.</summary>
    public void Acquire()
    {
        Waiter w;
        lock (_gate)
        {
            if (_waiters.Count == 0 && _free > 0)
            {
                _free--;
                return;
            }
            w = t_waiter ??= new Waiter();
            w.Admitted = false;
            _waiters.Enqueue(w);
        }
        lock (w)
        {
            while (!w.Admitted) Monitor.Wait(w);
        }
    }

    /// <summary>Gives back one slot: to the first waiter, if any.</summary>
    public void Release()
    {
        Waiter? next = null;
        lock (_gate)
        {
            if (_waiters.Count > 0) next = _waiters.Dequeue();
            else _free++;
        }
        if (next is null) return;
        lock (next)
        {
            next.Admitted = true;
            Monitor.Pulse(next);
        }
    }
}
