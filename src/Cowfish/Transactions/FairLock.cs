namespace Cowfish.Transactions;

/// <summary>
/// A first-come, first-served lock. The writer lock must be fair: a range clone takes it once per
/// slice, and with a barging lock it could take it back at once, slice after slice, while a
/// foreground write waited for the whole clone.
/// </summary>
internal sealed class FairLock
{
    // Guards both counters; waiters wait on it.
    private readonly object _gate = new();
    private long _nextTicket;
    private long _serving;

    public void Enter()
    {
        lock (_gate)
        {
            long ticket = _nextTicket++;
            while (ticket != _serving) Monitor.Wait(_gate);
        }
    }

    public void Exit()
    {
        lock (_gate)
        {
            _serving++;
            Monitor.PulseAll(_gate);
        }
    }
}
