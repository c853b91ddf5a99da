using Cowfish.Transactions;

namespace Cowfish.Files;

/// <summary>
/// Which snapshot each received volume came from, kept beside the volume directory in the plain
/// tree named <see cref="TreeName"/>: volume id (16 bytes) → the stream identity of the snapshot
/// it was received from (16 bytes). Kept apart from the 64-byte volume record, so that the record's
/// layout, and the builds that read it, stay as they are. An entry whose volume was deleted is
/// harmless (no volume has that id any more); receives prune such entries.
/// </summary>
internal static class VolumeReceipts
{
    public const string TreeName = "volumes.received";

    public static Dictionary<Guid, Guid> All(ReadTransaction rt) =>
        rt.TryGetNamedTree(TreeName, out var t) ? Decode(rt.Scan(t)) : new();

    public static Dictionary<Guid, Guid> All(WriteTransaction tx) =>
        tx.TryGetNamedTree(TreeName, out var t) ? Decode(tx.Scan(t)) : new();

    private static Dictionary<Guid, Guid> Decode(IEnumerable<KeyValuePair<byte[], byte[]>> entries)
    {
        var d = new Dictionary<Guid, Guid>();
        foreach (var kv in entries)
        {
            if (kv.Key.Length != 16 || kv.Value.Length != 16)
                throw new CorruptionException(0, "received-volume entry", "16-byte key and value", $"{kv.Key.Length}/{kv.Value.Length} bytes");
            d[new Guid(kv.Key)] = new Guid(kv.Value);
        }
        return d;
    }

    /// <summary>Records that <paramref name="volume"/> was received from <paramref name="from"/>, and drops entries of volumes that are gone.</summary>
    public static void Set(WriteTransaction tx, Guid volume, Guid from, IReadOnlySet<Guid> live)
    {
        if (!tx.TryGetNamedTree(TreeName, out var t))
        {
            t = tx.CreateTree();
            tx.SetNamedTree(TreeName, t);
        }
        foreach (var stale in Decode(tx.Scan(t)).Keys.Where(id => !live.Contains(id) && id != volume).ToList())
            tx.Delete(t, stale.ToByteArray());
        tx.Put(t, volume.ToByteArray(), from.ToByteArray());
    }

    /// <summary>Who a volume is to send and receive: the snapshot it was received from, if any, else itself.</summary>
    public static Guid Identity(Dictionary<Guid, Guid> receipts, VolumeRecord v) => receipts.TryGetValue(v.Id, out var from) ? from : v.Id;
}
