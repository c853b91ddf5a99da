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

    /// <summary>Writes at <paramref name="offset"/>, as <see cref="FileSystem.Write"/> does.</summary>
    public void Write(long offset, ReadOnlySpan<byte> data, bool durable = false)
    {
        if (_volume.ReadOnly) throw new ReadOnlyVolumeException(_volume.Name);
        _fs.WriteData(_volume, Inode, offset, data, durable);
    }

    /// <summary>The byte ranges that hold data (the rest reads as zeros).</summary>
    public IReadOnlyList<(long Offset, long Length)> DataRanges() => _fs.DataRanges(Path);
}
