namespace Cowfish.Files;

/// <summary>
/// An open regular file: the volume and inode are resolved once, so reads and writes skip the path
/// walk (what a block-device server does for every request). It stays valid while the file exists and
/// its volume keeps its name; operations on a removed file throw <see cref="NotFoundException"/>.
/// </summary>
public sealed class FileHandle
{
    private readonly FileSystem _fs;
    private readonly VolumeRecord _volume;

    internal FileHandle(FileSystem fs, VolumeRecord volume, ulong ino, string path)
    {
        _fs = fs;
        _volume = volume;
        Inode = ino;
        Path = path;
    }

    /// <summary>The path the handle was opened with.</summary>
    public string Path { get; }

    public ulong Inode { get; }

    /// <summary>Whether the file lives in a read-only snapshot.</summary>
    public bool ReadOnly => _volume.ReadOnly;

    /// <summary>The file's size now.</summary>
    public long Size => (long)_fs.ReadInode(_volume, Inode).Size;

    /// <summary>Reads at <paramref name="offset"/> on the newest committed state; returns the bytes read.</summary>
    public int Read(long offset, Span<byte> buffer) => _fs.ReadData(_volume, Inode, offset, buffer);

    /// <summary>
    /// Writes at <paramref name="offset"/>, as <see cref="FileSystem.Write"/> does, but write-back:
    /// the data is on its new blocks when this returns, and its mapping is queued and applied in the
    /// background with other writes, many per transaction. Reads of the same blocks wait for it, and
    /// every other operation (stat, clone, snapshot, flush) first lets the queue drain, so everything
    /// that runs after this call sees the write. Durable after the next flush; with
    /// <paramref name="durable"/>, mapped and durable before it returns.
    /// </summary>
    public void Write(long offset, ReadOnlySpan<byte> data, bool durable = false)
    {
        if (_volume.ReadOnly) throw new ReadOnlyVolumeException(_volume.Name);
        _fs.WriteData(_volume, Inode, offset, data, durable, deferred: true);
    }

    /// <summary>
    /// Deallocates [offset, offset + length) inside the file: it reads as zeros afterwards; the size
    /// does not change. Durable on return with <paramref name="durable"/>, else at the next flush.
    /// </summary>
    public void PunchHole(long offset, long length, bool durable = false)
    {
        if (_volume.ReadOnly) throw new ReadOnlyVolumeException(_volume.Name);
        _fs.Zero(_volume, Inode, offset, length, keepSize: true, durable);
    }

    /// <summary>
    /// Makes [offset, offset + length) read as zeros. With <paramref name="allocate"/> the range stays
    /// allocated (unwritten extents, so later writes there cannot run out of space); without, it
    /// becomes a hole. Either way only metadata changes, so it is fast whatever the length.
    /// </summary>
    public void WriteZeroes(long offset, long length, bool allocate, bool durable = false)
    {
        if (_volume.ReadOnly) throw new ReadOnlyVolumeException(_volume.Name);
        _fs.Zero(_volume, Inode, offset, length, keepSize: false, durable: durable && !allocate);
        if (!allocate) return;
        // Whole blocks were unmapped; allocate them again as unwritten extents. A crash between the
        // two leaves a hole, which reads as zeros too.
        const int bs = Format.Layout.BlockSize;
        long from = (offset + bs - 1) / bs * bs, to = (offset + length) / bs * bs;
        if (to > from) _fs.Preallocate(_volume, Inode, from, to - from, durable);
        else if (durable) _fs.Flush();
    }

    /// <summary>
    /// How [offset, offset + length) is stored (data, unwritten, hole), clipped to the file size, in
    /// at most <paramref name="maxSegments"/> segments; returns true if they reach the end of the
    /// range or of the file.
    /// </summary>
    public bool Allocation(long offset, long length, List<AllocationSegment> into, int maxSegments = int.MaxValue) =>
        _fs.Allocation(_volume, Inode, offset, length, into, maxSegments);

    /// <summary>Makes every write acknowledged so far, on any handle of the pool, durable.</summary>
    public void Flush() => _fs.Flush();

    /// <summary>The byte ranges that hold data (the rest reads as zeros).</summary>
    public IReadOnlyList<(long Offset, long Length)> DataRanges() => _fs.DataRanges(Path);
}
