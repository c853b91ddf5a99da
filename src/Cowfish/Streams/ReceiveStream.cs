using Cowfish.Files;

namespace Cowfish.Streams;

/// <summary>
/// Applies send streams to a pool. A receive builds a hidden, partial volume (not in the volume
/// directory, so no listing shows it) in batches, one transaction each; each batch also records how
/// far the stream got. Only when the end record has been read and verified does one transaction
/// publish the volume as a read-only snapshot. An interrupted or damaged stream therefore leaves the
/// visible pool as it was, plus the partial state, which <see cref="Pending"/> describes (with the
/// token a sender resumes from) and <see cref="Abort"/> removes.
/// </summary>
public static class ReceiveStream
{
    /// <summary>
    /// Reads one stream from <paramref name="input"/> and publishes the snapshot it carries. An
    /// incremental stream needs its parent here: a read-only snapshot received from (or being) the
    /// sender's parent, with the same content; it is refused otherwise. Errors in the stream throw
    /// <see cref="InvalidStreamException"/> with the input offset of the bad record. The input must
    /// end right after the END record (it is read to its end, to refuse trailing bytes); the caller
    /// owns it, and it is not disposed.
    /// </summary>
    public static ReceiveResult Apply(FileSystem fs, Stream input, ReceiveOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(fs);
        ArgumentNullException.ThrowIfNull(input);
        return new Receiver(fs, options ?? new ReceiveOptions()).Run(input);
    }

    /// <summary>The receive that was interrupted on this pool, if any.</summary>
    public static PendingReceive? Pending(FileSystem fs)
    {
        ArgumentNullException.ThrowIfNull(fs);
        using var rt = fs.Pool.BeginRead();
        if (!Receiver.TryGetState(rt, out var s)) return null;
        return new PendingReceive(s.Name, s.Snapshot, s.Incremental ? s.Parent : null, s.Offset, s.Token());
    }

    /// <summary>Removes an interrupted receive's partial state; returns false if there was none. Its space comes back before it returns.</summary>
    public static bool Abort(FileSystem fs)
    {
        ArgumentNullException.ThrowIfNull(fs);
        using (var tx = fs.Pool.BeginWrite())
        {
            if (!tx.TryGetNamedTree(ReceiveState.TreeName, out var stateTree)) return false;
            if (tx.TryGet(stateTree, ReceiveState.Key, out var v))
            {
                var s = ReceiveState.Decode(v);
                if (tx.TreeExists(s.Partial)) tx.DropTree(s.Partial);
            }
            tx.RemoveNamedTree(ReceiveState.TreeName);
            tx.DropTree(stateTree);
            tx.Commit();
        }
        fs.Reclaim();
        return true;
    }
}
