using System.Buffers.Binary;

namespace Cowfish.Files;

/// <summary>
/// One extent record of a file: <see cref="Count"/> file blocks starting at the record's key map
/// to blocks <see cref="Offset"/>.. of the disk extent that starts at <see cref="DiskStart"/> and
/// is <see cref="DiskBlocks"/> long. Reference counts are kept per disk extent, so a record that
/// covers only part of an extent (after a partial overwrite or a range clone) keeps the whole
/// extent alive. Each covered block carries its CRC32C, checked on every read.
/// </summary>
internal readonly record struct Extent(ulong DiskStart, uint DiskBlocks, uint Offset, uint Count, bool Unwritten, uint[] Crcs)
{
    public const int HeaderSize = 24;
    /// <summary>Most blocks one record covers (its CRCs must fit in a tree value).</summary>
    public const uint MaxBlocks = 256;

    /// <summary>Bytes of the encoded record.</summary>
    public int EncodedLength => HeaderSize + (Unwritten ? 0 : (int)Count * 4);

    /// <summary>Largest encoded record.</summary>
    public const int MaxEncodedLength = HeaderSize + (int)MaxBlocks * 4;

    public byte[] Encode()
    {
        var v = new byte[EncodedLength];
        EncodeInto(v);
        return v;
    }

    /// <summary>Encodes into <paramref name="into"/> (at least <see cref="EncodedLength"/> bytes) and returns the encoded part.</summary>
    public ReadOnlySpan<byte> EncodeInto(Span<byte> into)
    {
        var v = into[..EncodedLength];
        BinaryPrimitives.WriteUInt64LittleEndian(v, DiskStart);
        BinaryPrimitives.WriteUInt32LittleEndian(v[8..], DiskBlocks);
        BinaryPrimitives.WriteUInt32LittleEndian(v[12..], Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(v[16..], Count);
        v[20] = Unwritten ? (byte)1 : (byte)0;
        v[21..HeaderSize].Clear();
        if (!Unwritten)
            for (int i = 0; i < Count; i++) BinaryPrimitives.WriteUInt32LittleEndian(v[(HeaderSize + i * 4)..], Crcs[i]);
        return v;
    }

    public static Extent Decode(ReadOnlySpan<byte> v, ulong nodeAddress)
    {
        if (v.Length < HeaderSize) throw new CorruptionException(nodeAddress, "extent record length", $">= {HeaderSize}", v.Length.ToString());
        ulong start = BinaryPrimitives.ReadUInt64LittleEndian(v);
        uint disk = BinaryPrimitives.ReadUInt32LittleEndian(v[8..]);
        uint off = BinaryPrimitives.ReadUInt32LittleEndian(v[12..]);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(v[16..]);
        byte flags = v[20];
        if (flags > 1) throw new CorruptionException(nodeAddress, "extent flags", "0 or 1", flags.ToString());
        bool unwritten = flags == 1;
        if (count == 0 || count > MaxBlocks || disk == 0 || disk > MaxBlocks || (ulong)off + count > disk)
            throw new CorruptionException(nodeAddress, "extent bounds", $"0 < count <= {MaxBlocks}, offset + count <= extent length", $"offset {off}, count {count}, extent {disk}");
        int want = HeaderSize + (unwritten ? 0 : (int)count * 4);
        if (v.Length != want) throw new CorruptionException(nodeAddress, "extent record length", want.ToString(), v.Length.ToString());
        var crcs = new uint[unwritten ? 0 : count];
        for (int i = 0; i < crcs.Length; i++) crcs[i] = BinaryPrimitives.ReadUInt32LittleEndian(v[(HeaderSize + i * 4)..]);
        return new Extent(start, disk, off, count, unwritten, crcs);
    }

    /// <summary>The disk extent a record value references, without decoding the rest.</summary>
    public static (ulong Start, uint Blocks) DiskExtentOf(ReadOnlySpan<byte> v) =>
        (BinaryPrimitives.ReadUInt64LittleEndian(v), BinaryPrimitives.ReadUInt32LittleEndian(v[8..]));

    /// <summary>The part of this record covering [from, from + count) of its own blocks.</summary>
    public Extent Slice(uint from, uint count) =>
        this with { Offset = Offset + from, Count = count, Crcs = Unwritten ? [] : Crcs.AsSpan((int)from, (int)count).ToArray() };

    public ulong DiskBlock(uint i) => DiskStart + Offset + i;
}

/// <summary>
/// One written extent record of a file as defrag sees it: file block, disk extent, the part of
/// it the record covers, and whether the extent is the file's alone.
/// </summary>
internal readonly record struct FileRecord(ulong FileBlock, ulong DiskStart, uint DiskBlocks, uint Offset, uint Count, bool Exclusive)
{
    /// <summary>Maximal runs of records whose disk blocks follow each other in file order.</summary>
    public static int Fragments(IEnumerable<FileRecord> records)
    {
        int fragments = 0;
        ulong next = 0;
        foreach (var r in records)
        {
            if (r.DiskStart + r.Offset != next) fragments++;
            next = r.DiskStart + r.Offset + r.Count;
        }
        return fragments;
    }
}
