using Cowfish.Files;

namespace Cowfish.Streams;

/// <summary>
/// Writes a read-only snapshot as a send stream (docs/send-stream.md): in full, or as the changes
/// from a parent snapshot. The whole send reads one pinned state of the pool, so writes, clones,
/// deletes and snapshots running meanwhile change nothing it sees, and it never takes the writer
/// lock: a receive into the same pool, fed through a pipe, never waits for it nor it for the receive.
/// </summary>
public static class SendStream
{
    /// <summary>
    /// Writes <paramref name="snapshot"/> to <paramref name="output"/>, in full or, with
    /// <paramref name="parent"/>, as the changes since that snapshot. An incremental stream costs
    /// O(changes): the volume trees and each changed file's extent tree are compared with a diff that
    /// skips shared subtrees. File data shared within the stream goes as clone records.
    /// Both snapshots must be read-only (<see cref="InvalidRequestException"/> otherwise). The caller
    /// owns <paramref name="output"/>: it is flushed after the END record, not closed (a receiver
    /// at the other end of a pipe waits for it to be closed).
    /// </summary>
    public static SendResult Write(FileSystem fs, string snapshot, string? parent, Stream output, SendOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(fs);
        ArgumentNullException.ThrowIfNull(output);
        options ??= new SendOptions();
        using var rt = fs.Pool.BeginRead();
        var snap = ReadOnlySnapshot(rt, snapshot);
        var par = parent is null ? null : ReadOnlySnapshot(rt, parent);
        var receipts = VolumeReceipts.All(rt);
        Guid snapId = VolumeReceipts.Identity(receipts, snap), parId = par is null ? Guid.Empty : VolumeReceipts.Identity(receipts, par);
        ResumePoint? resume = null;
        if (options.ResumeToken is { } token)
        {
            var (s, p, point) = ReceiveState.ParseToken(token);
            if (s != snapId) throw new InvalidRequestException($"the resume token is for snapshot {s}, not '{snapshot}' ({snapId})");
            if (p != parId)
                throw new InvalidRequestException(p == Guid.Empty
                    ? "the resume token is for a full stream; send without a parent"
                    : $"the resume token is for an incremental stream from parent {p}; pass that parent");
            resume = point;
        }
        using var writer = new RecordWriter(output, resume);
        var sender = new Sender(fs.Pool, rt, writer, options.Progress);
        sender.Run(snap, snapId, par, parId);
        return new SendResult(writer.Written, writer.Offset, (long)writer.Sequence, sender.DataBytes, sender.ClonedBytes, par is not null);
    }

    private static VolumeRecord ReadOnlySnapshot(Transactions.ReadTransaction rt, string name)
    {
        var rec = FileSystem.GetVolume(rt, name);
        if (!rec.ReadOnly)
            throw new InvalidRequestException($"'{name}' is not a read-only snapshot; only read-only snapshots can be sent (take a read-only snapshot of it first)");
        return rec;
    }
}
