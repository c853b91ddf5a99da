namespace Cowfish.Files;

/// <summary>
/// Block-range locks per file, held by writers only (readers work on pinned snapshots and never
/// take them). Two writes to overlapping blocks run one after the other, so the second one's
/// read-modify-write sees the first one's blocks: a shared block is copied once, and no update is lost.
/// </summary>
internal sealed class RangeLocks
{
    // Guards _held; waiters wait on it and every release wakes them all.
    private readonly object _gate = new();
    private readonly Dictionary<(ulong Tree, ulong Ino), List<(ulong From, ulong To)>> _held = new();
    // Emptied lists, reused for the next file (a lock costs no allocation).
    private readonly Stack<List<(ulong From, ulong To)>> _spare = new();

    /// <summary>A held range; disposing releases it. The default value holds nothing.</summary>
    public readonly struct Lease(RangeLocks owner, ulong tree, ulong ino, ulong from, ulong to) : IDisposable
    {
        public void Dispose() => owner?.Release(tree, ino, from, to);
    }

    /// <summary>Waits until no other writer holds a block of [from, to) of the file, then holds it.</summary>
    public Lease Acquire(ulong tree, ulong ino, ulong from, ulong to)
    {
        using var phase = PhaseRecorder.Enter(Phase.Lock);
        if (to <= from) to = from + 1;
        lock (_gate)
        {
            while (true)
            {
                if (!_held.TryGetValue((tree, ino), out var list))
                {
                    list = _spare.Count > 0 ? _spare.Pop() : new(4);
                    _held[(tree, ino)] = list;
                }
                if (!Overlaps(list, from, to))
                {
                    list.Add((from, to));
                    return new Lease(this, tree, ino, from, to);
                }
                Monitor.Wait(_gate);
            }
        }
    }

    private static bool Overlaps(List<(ulong From, ulong To)> held, ulong from, ulong to)
    {
        foreach (var r in held)
            if (r.From < to && from < r.To) return true;
        return false;
    }

    private void Release(ulong tree, ulong ino, ulong from, ulong to)
    {
        if (to <= from) to = from + 1;
        lock (_gate)
        {
            var list = _held[(tree, ino)];
            list.Remove((from, to));
            if (list.Count == 0)
            {
                _held.Remove((tree, ino));
                if (_spare.Count < 64) _spare.Push(list);
            }
            Monitor.PulseAll(_gate);
        }
    }
}
