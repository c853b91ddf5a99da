using Cowfish.Files;
using Cowfish.Format;
using Cowfish.Transactions;
using Cowfish.Trees;

namespace Cowfish.Streams;

/// <summary>
/// One run of <see cref="ReceiveStream.Apply"/>. Records are read and checked in batches without
/// any lock (a WRITE's data is written at once into a reserved run, as a file write does), then each
/// batch is applied in one write transaction together with the new resume point. The writer lock is
/// therefore never held while waiting for input: a sender feeding this receive through a pipe from
/// the same pool, or any other writer, is never blocked behind a stalled input.
/// </summary>
internal sealed class Receiver(FileSystem fs, ReceiveOptions options)
{
    private const int BlockSize = Layout.BlockSize;
    private Pool Pool => fs.Pool;
    // Whether the current batch's reserved runs belong to a transaction now (whose abort frees them).
    private bool _claimed;

    /// <summary>What the BEGIN (or RESUME) record says.</summary>
    private sealed record BeginInfo(bool Incremental, Guid Snapshot, Guid Parent, uint ParentFingerprint, long CreatedNs, string Name);

    internal static bool TryGetState(ReadTransaction rt, out ReceiveState state)
    {
        state = null!;
        if (!rt.TryGetNamedTree(ReceiveState.TreeName, out var t) || !rt.TryGet(t, ReceiveState.Key, out var v)) return false;
        state = ReceiveState.Decode(v);
        return true;
    }

    private static bool TryGetState(WriteTransaction tx, out TreeId tree, out ReceiveState state)
    {
        state = null!;
        if (!tx.TryGetNamedTree(ReceiveState.TreeName, out tree) || !tx.TryGet(tree, ReceiveState.Key, out var v)) return false;
        state = ReceiveState.Decode(v);
        return true;
    }

    public ReceiveResult Run(Stream input)
    {
        using var reader = new RecordReader(input);
        var header = reader.ReadHeader();
        reader.Next();
        if (reader.Type is not (RecordType.Begin or RecordType.Resume))
            throw new InvalidStreamException(reader.RecordOffset, $"the first record is {reader.Type}, expected BEGIN or RESUME");
        if (reader.Sequence != 0) throw new InvalidStreamException(reader.RecordOffset, $"the first record has sequence {reader.Sequence}, expected 0");
        var pr = new PayloadReader(reader.Payload, reader.RecordOffset);
        var begin = ParseBegin(ref pr);
        ReceiveState state;
        bool resumed = reader.Type == RecordType.Resume;
        if (!resumed)
        {
            pr.End("BEGIN");
            state = Prepare(begin, reader.RecordOffset);
            uint crc = Crc32C.Update(Crc32C.Update(0xFFFFFFFFu, header), reader.Raw);
            state = state with { NextSequence = 1, Offset = header.Length + reader.Raw.Length, Crc = ~crc };
        }
        else
        {
            var point = new ResumePoint(pr.U64("next sequence"), (long)pr.U64("offset"), pr.U32("CRC"));
            pr.End("RESUME");
            using var rt = Pool.BeginRead();
            if (!TryGetState(rt, out state))
                throw new InvalidRequestException("this is a resumed stream, but no receive is pending on this pool");
            if (state.Snapshot != begin.Snapshot || state.Parent != begin.Parent || state.Point != point)
                throw new InvalidRequestException($"this resumed stream does not continue the pending receive of '{state.Name}' "
                    + $"(stream: snapshot {begin.Snapshot}, record {point.Sequence}; pending: snapshot {state.Snapshot}, record {state.NextSequence}); "
                    + "print the current token with 'cowfish receive --token'");
        }
        return Loop(reader, state, resumed, created: resumed);
    }

    private static BeginInfo ParseBegin(ref PayloadReader pr)
    {
        uint flags = pr.U32("flags");
        if (flags > 1) throw new InvalidStreamException(pr.RecordOffset, $"unknown BEGIN flags 0x{flags:X8}");
        var snap = pr.Uuid("snapshot");
        var parent = pr.Uuid("parent");
        uint fingerprint = pr.U32("parent fingerprint");
        long created = pr.I64("created");
        int n = pr.U16("name length");
        if (n == 0 || n > StreamFormat.MaxVolumeName) throw new InvalidStreamException(pr.RecordOffset, $"snapshot name of {n} bytes (1 to {StreamFormat.MaxVolumeName})");
        string name = System.Text.Encoding.UTF8.GetString(pr.Bytes(n, "name"));
        bool incremental = flags == 1;
        if (incremental == (parent == Guid.Empty)) throw new InvalidStreamException(pr.RecordOffset, "the incremental flag and the parent do not agree");
        return new BeginInfo(incremental, snap, parent, fingerprint, created, name);
    }

    /// <summary>Checks that a new receive can start here: nothing pending, a free name, and for an incremental stream, its parent.</summary>
    private ReceiveState Prepare(BeginInfo b, long offset)
    {
        using var rt = Pool.BeginRead();
        if (TryGetState(rt, out var pending))
            throw new InvalidRequestException($"a receive of '{pending.Name}' was interrupted on this pool; resume it (cowfish send --resume TOKEN, token from 'cowfish receive --token') or abort it ('cowfish receive --abort')");
        string name = options.Name ?? b.Name;
        VolumeRecord.Key(name);
        var volumes = AllVolumes(rt);
        if (volumes.Any(v => v.Name == name)) throw new InvalidRequestException($"volume '{name}' already exists; receive under another name");
        Guid parentVolume = Guid.Empty;
        if (b.Incremental)
        {
            // A snapshot received from the parent, or the parent itself (a stream into its own pool).
            var receipts = VolumeReceipts.All(rt);
            var candidates = volumes.Where(v => v.ReadOnly && VolumeReceipts.Identity(receipts, v) == b.Parent).ToList();
            if (candidates.Count == 0)
                throw new InvalidRequestException($"the stream is incremental from snapshot {b.Parent}, which is not on this pool (receive its parent first)");
            var parent = candidates.FirstOrDefault(v => Sender.Fingerprint(rt.Tree(v.Tree)) == b.ParentFingerprint)
                ?? throw new InvalidRequestException($"the parent snapshot '{candidates[0].Name}' differs from the sender's ({b.Parent}): "
                    + $"fingerprint 0x{Sender.Fingerprint(rt.Tree(candidates[0].Tree)):X8}, the stream expects 0x{b.ParentFingerprint:X8}");
            parentVolume = parent.Id;
        }
        return new ReceiveState(b.Incremental, b.Snapshot, b.Parent, parentVolume, default, b.CreatedNs, name, 0, 0, 0);
    }

    private static List<VolumeRecord> AllVolumes(ReadTransaction rt) =>
        rt.TryGetNamedTree(VolumeRecord.DirectoryName, out var dir) ? rt.Scan(dir).Select(kv => VolumeRecord.Decode(kv.Key, kv.Value)).ToList() : [];

    private ReceiveResult Loop(RecordReader reader, ReceiveState state, bool resumed, bool created)
    {
        long sinceFlush = 0;
        while (true)
        {
            var batch = new List<ReceiveCommand>();
            var reserved = new List<(ulong Disk, uint Count)>();
            _claimed = false;
            try
            {
                ulong seq = state.NextSequence;
                long offset = state.Offset;
                uint crc = ~state.Crc;
                long data = 0;
                bool end = false;
                while (batch.Count < options.BatchRecords && data < options.BatchBytes)
                {
                    reader.Next();
                    if (reader.Sequence != seq)
                        throw new InvalidStreamException(reader.RecordOffset, $"record sequence {reader.Sequence}, expected {seq} (a record is missing, repeated or out of order)");
                    if (reader.Type == RecordType.End)
                    {
                        CheckEnd(reader, seq, offset, ~crc);
                        end = true;
                        break;
                    }
                    var cmd = Parse(reader, reserved);
                    batch.Add(cmd);
                    if (cmd.Type == RecordType.Write) data += (long)cmd.Count * BlockSize;
                    crc = Crc32C.Update(crc, reader.Raw);
                    offset += reader.Raw.Length;
                    seq++;
                }
                var next = state with { NextSequence = seq, Offset = offset, Crc = ~crc };
                if (end && !reader.AtEnd())
                    throw new InvalidStreamException(reader.Position, "unexpected bytes after the end record");
                state = ApplyBatch(batch, reserved, state, next, created, publish: end);
                created = true;
                options.Progress?.Invoke(reader.Position);
                if (end)
                {
                    fs.Reclaim();
                    return new ReceiveResult(state.Name, state.Snapshot, state.Incremental ? state.Parent : null, reader.Position, resumed);
                }
                sinceFlush += data;
                if (sinceFlush >= options.FlushBytes)
                {
                    Pool.Flush();
                    sinceFlush = 0;
                }
            }
            catch
            {
                // Runs reserved for data that no transaction claimed go back; an aborted transaction freed its claims.
                if (!_claimed) foreach (var (disk, n) in reserved) Pool.Space.Unreserve(disk, n);
                throw;
            }
        }
    }

    private static void CheckEnd(RecordReader reader, ulong seq, long offset, uint crc)
    {
        var pr = new PayloadReader(reader.Payload, reader.RecordOffset);
        ulong length = pr.U64("length");
        ulong count = pr.U64("record count");
        uint sum = pr.U32("stream CRC");
        pr.End("END");
        if (length != (ulong)offset) throw new InvalidStreamException(reader.RecordOffset, $"the end record says the stream is {length} bytes long before it; {offset} were received");
        if (count != seq) throw new InvalidStreamException(reader.RecordOffset, $"the end record counts {count} records before it; {seq} were received");
        if (sum != crc) throw new InvalidStreamException(reader.RecordOffset, $"stream checksum mismatch: the end record says 0x{sum:X8}, the stream gives 0x{crc:X8}");
    }

    /// <summary>
    /// Decodes one command record; a WRITE's data goes to a reserved run at once, so the batch holds
    /// no data in memory. (One case per record type, in the order of docs/send-stream.md, so the
    /// method is long but reads like the format's table.)
    /// </summary>
    private ReceiveCommand Parse(RecordReader reader, List<(ulong Disk, uint Count)> reserved)
    {
        var pr = new PayloadReader(reader.Payload, reader.RecordOffset);
        var c = new ReceiveCommand { Type = reader.Type, Offset = reader.RecordOffset };
        long at = reader.RecordOffset;
        switch (reader.Type)
        {
            case RecordType.VolumeHeader:
                c.NextIno = pr.U64("next inode");
                break;
            case RecordType.Inode:
                c.Ino = Ino(pr.U64("inode"), at);
                c.Inode = ParseInode(ref pr, c.Ino, at);
                break;
            case RecordType.RemoveInode:
                c.Ino = Ino(pr.U64("inode"), at);
                break;
            case RecordType.Link:
                c.Dir = Ino(pr.U64("directory"), at);
                c.Name = pr.Name("name");
                c.Ino = Ino(pr.U64("inode"), at);
                c.FileType = Type(pr.U8("type"), at);
                break;
            case RecordType.Unlink:
                c.Dir = Ino(pr.U64("directory"), at);
                c.Name = pr.Name("name");
                break;
            case RecordType.SetXattr:
            {
                c.Ino = Ino(pr.U64("inode"), at);
                c.Name = XattrName(ref pr);
                int n = pr.U16("value length");
                if (n > StreamFormat.MaxXattrValue) throw new InvalidStreamException(at, $"extended attribute value of {n} bytes (at most {StreamFormat.MaxXattrValue})");
                c.Value = pr.Bytes(n, "value").ToArray();
                break;
            }
            case RecordType.RemoveXattr:
                c.Ino = Ino(pr.U64("inode"), at);
                c.Name = XattrName(ref pr);
                break;
            case RecordType.Write:
            {
                c.Ino = Ino(pr.U64("inode"), at);
                c.Block = pr.U64("block");
                uint n = pr.U32("count");
                CheckRange(c.Block, n, at);
                c.Count = n;
                if (pr.Remaining != (long)n * BlockSize) throw new InvalidStreamException(at, $"a WRITE of {n} blocks carries {pr.Remaining} bytes of data");
                var bytes = pr.Bytes((int)n * BlockSize, "data");
                c.Crcs = new uint[n];
                for (int i = 0; i < n; i++) c.Crcs[i] = Crc32C.Compute(bytes.Slice(i * BlockSize, BlockSize));
                c.Disk = Pool.Space.Reserve(n);
                reserved.Add((c.Disk, n));
                WriteDevice(c.Disk, bytes);
                break;
            }
            case RecordType.Clone:
            {
                c.Ino = Ino(pr.U64("inode"), at);
                c.Block = pr.U64("block");
                uint n = pr.U32("count");
                CheckRange(c.Block, n, at);
                c.Count = n;
                c.SrcIno = Ino(pr.U64("source inode"), at);
                c.SrcBlock = pr.U64("source block");
                CheckRange(c.SrcBlock, n, at);
                if (pr.Remaining != n * 4) throw new InvalidStreamException(at, $"a CLONE of {n} blocks carries {pr.Remaining} bytes of checksums");
                c.Crcs = new uint[n];
                for (int i = 0; i < n; i++) c.Crcs[i] = pr.U32("checksum");
                break;
            }
            case RecordType.Punch:
                c.Ino = Ino(pr.U64("inode"), at);
                c.Block = pr.U64("block");
                c.Count = pr.U64("count");
                if (c.Count == 0 || c.Block >= StreamFormat.MaxFileBlocks || c.Count > StreamFormat.MaxFileBlocks)
                    throw new InvalidStreamException(at, $"punch of {c.Count} blocks at block {c.Block} is out of bounds");
                break;
            case RecordType.Prealloc:
            {
                c.Ino = Ino(pr.U64("inode"), at);
                c.Block = pr.U64("block");
                uint n = pr.U32("count");
                CheckRange(c.Block, n, at);
                c.Count = n;
                break;
            }
            case RecordType.CloneFile:
                c.Ino = Ino(pr.U64("inode"), at);
                c.SrcIno = Ino(pr.U64("source inode"), at);
                break;
            default:
                throw new InvalidStreamException(at, $"a {reader.Type} record in the middle of the stream");
        }
        pr.End(reader.Type.ToString());
        return c;
    }

    private static ulong Ino(ulong ino, long at) => ino != 0 ? ino : throw new InvalidStreamException(at, "inode number 0");

    private static FileType Type(byte t, long at) =>
        t is (byte)FileType.File or (byte)FileType.Directory or (byte)FileType.Symlink ? (FileType)t : throw new InvalidStreamException(at, $"file type {t}");

    private static void CheckRange(ulong block, uint count, long at)
    {
        if (count == 0 || count > StreamFormat.MaxBlocksPerRecord || block >= StreamFormat.MaxFileBlocks || block + count > StreamFormat.MaxFileBlocks)
            throw new InvalidStreamException(at, $"{count} blocks at file block {block} (1 to {StreamFormat.MaxBlocksPerRecord} blocks, below 2^50 bytes)");
    }

    private static byte[] XattrName(ref PayloadReader pr)
    {
        int n = pr.U8("name length");
        if (n == 0) throw new InvalidStreamException(pr.RecordOffset, "empty extended attribute name");
        return pr.Bytes(n, "name").ToArray();
    }

    private static Inode ParseInode(ref PayloadReader pr, ulong ino, long at)
    {
        var type = Type(pr.U8("type"), at);
        if (pr.U8("reserved") != 0 || pr.U16("reserved") != 0) throw new InvalidStreamException(at, "reserved inode bytes are not zero");
        var i = new Inode
        {
            Type = type,
            Mode = pr.U32("mode"),
            Uid = pr.U32("uid"),
            Gid = pr.U32("gid"),
            Nlink = pr.U32("links"),
            Size = pr.U64("size"),
            AtimeNs = pr.I64("atime"),
            MtimeNs = pr.I64("mtime"),
            CtimeNs = pr.I64("ctime"),
            BtimeNs = pr.I64("btime"),
            DataVersion = pr.U64("data version"),
        };
        int n = pr.U16("symlink target length");
        if (n > StreamFormat.MaxSymlinkTarget || (n > 0) != (type == FileType.Symlink))
            throw new InvalidStreamException(at, $"inode {ino}: a symlink target of {n} bytes on a {type}");
        if (i.Size > (ulong)FileSystem.MaxFileSize) throw new InvalidStreamException(at, $"inode {ino}: size {i.Size} is over the largest file");
        return i with { SymlinkTarget = pr.Bytes(n, "symlink target").ToArray() };
    }

    private void WriteDevice(ulong block, ReadOnlySpan<byte> data)
    {
        try { Pool.Device.Write(Layout.ByteOffset(block), data); }
        catch (DeviceIOException e)
        {
            Pool.Fail(e);
            throw new EngineFailedException(e);
        }
    }

    /// <summary>
    /// Applies one batch in one transaction, with the new resume point; the first batch also makes
    /// the partial volume (empty, or a clone of the parent) and the state, and the last publishes.
    /// </summary>
    private ReceiveState ApplyBatch(List<ReceiveCommand> batch, List<(ulong Disk, uint Count)> reserved, ReceiveState before, ReceiveState after,
        bool created, bool publish)
    {
        using var tx = Pool.BeginWrite();
        foreach (var (disk, n) in reserved) Pool.Space.Claim(disk, n);
        _claimed = true;
        TreeId stateTree;
        var dir = FileSystem.VolumeDirectory(tx);
        if (!created)
        {
            if (tx.TryGetNamedTree(ReceiveState.TreeName, out _)) throw new InvalidRequestException("another receive started on this pool meanwhile");
            TreeId partial;
            if (before.Incremental)
            {
                var parent = ParentIn(tx, dir, before.ParentVolume)
                    ?? throw new InvalidRequestException($"the parent snapshot {before.Parent} went away during the receive");
                partial = tx.CloneTree(parent.Tree);
            }
            else partial = tx.CreateTree(TreeKind.Volume);
            stateTree = tx.CreateTree();
            tx.SetNamedTree(ReceiveState.TreeName, stateTree);
            after = after with { Partial = partial };
        }
        else
        {
            // The pending state must still be the one this batch continues (no abort or other resume meanwhile).
            if (!TryGetState(tx, out stateTree, out var now) || now.Snapshot != before.Snapshot || now.Point != before.Point || now.Partial != before.Partial)
                throw new InvalidRequestException("the pending receive was aborted or resumed elsewhere meanwhile");
        }
        var rec = new VolumeRecord(after.Name, after.Partial, false, 0, Guid.Empty, Guid.Empty, 0);
        var applier = new Applier(tx, rec);
        foreach (var c in batch) applier.Apply(c);
        applier.Finish();
        if (!publish)
        {
            tx.Put(stateTree, ReceiveState.Key, after.Encode());
            tx.Commit(waitForDurability: false);
            return after;
        }
        applier.CheckComplete(after.Offset);
        if (tx.TryGet(dir, VolumeRecord.Key(after.Name), out _)) throw new InvalidRequestException($"volume '{after.Name}' was created during the receive; receive under another name");
        var id = Guid.NewGuid();
        var live = tx.Scan(dir).Select(kv => VolumeRecord.Decode(kv.Key, kv.Value).Id).ToHashSet();
        tx.Put(dir, VolumeRecord.Key(after.Name), new VolumeRecord(after.Name, after.Partial, true, Inode.NowNs(), id, after.ParentVolume, tx.Generation.Value).Encode());
        VolumeReceipts.Set(tx, id, after.Snapshot, live);
        tx.RemoveNamedTree(ReceiveState.TreeName);
        tx.DropTree(stateTree);
        tx.Commit();
        return after;
    }

    private static VolumeRecord? ParentIn(WriteTransaction tx, TreeId dir, Guid id) =>
        tx.Scan(dir).Select(kv => VolumeRecord.Decode(kv.Key, kv.Value)).FirstOrDefault(v => v.Id == id && v.ReadOnly);
}
