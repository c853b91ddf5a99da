using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Cowfish.Devices;

/// <summary>
/// A pool held in a host file: positional reads and writes (pread/pwrite) and fdatasync.
/// The file is locked exclusively (flock) for as long as the device is open, so a pool is
/// open in one process at a time.
/// </summary>
public sealed class FileDevice : IBlockDevice
{
    private readonly SafeFileHandle _handle;
    private readonly string _path;
    private long _length;

    private FileDevice(SafeFileHandle handle, string path)
    {
        _handle = handle;
        _path = path;
        _length = RandomAccess.GetLength(handle);
    }

    public string Path => _path;

    /// <summary>Opens an existing file, or creates one when <paramref name="create"/> is set.</summary>
    public static FileDevice Open(string path, bool create = false, bool readOnly = false)
    {
        var mode = create ? FileMode.CreateNew : FileMode.Open;
        var access = readOnly ? FileAccess.Read : FileAccess.ReadWrite;
        try
        {
            var h = File.OpenHandle(path, mode, access, FileShare.None);
            return new FileDevice(h, path);
        }
        catch (IOException e) when (e is not FileNotFoundException && e is not DirectoryNotFoundException
                                    && File.Exists(path) && !create)
        {
            throw new PoolBusyException(path, e);
        }
    }

    public long Length => Interlocked.Read(ref _length);

    public void Read(long offset, Span<byte> buffer)
    {
        try
        {
            while (!buffer.IsEmpty)
            {
                int n = RandomAccess.Read(_handle, buffer, offset);
                if (n == 0) { buffer.Clear(); return; }
                buffer = buffer[n..];
                offset += n;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DeviceIOException($"read of {buffer.Length} bytes at offset {offset} of {_path} failed: {e.Message}", e);
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        try
        {
            RandomAccess.Write(_handle, buffer, offset);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DeviceIOException($"write of {buffer.Length} bytes at offset {offset} of {_path} failed: {e.Message}", e);
        }
        Wrote(offset, buffer.Length);
    }

    public void WriteGather(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers)
    {
        long bytes = 0;
        foreach (var b in buffers) bytes += b.Length;
        try
        {
            RandomAccess.Write(_handle, buffers, offset);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DeviceIOException($"write of {bytes} bytes at offset {offset} of {_path} failed: {e.Message}", e);
        }
        Wrote(offset, bytes);
    }

    private void Wrote(long offset, long bytes)
    {
        long end = offset + bytes;
        long cur;
        while (end > (cur = Interlocked.Read(ref _length)) && Interlocked.CompareExchange(ref _length, end, cur) != cur) { }
        if (Interlocked.Add(ref _unsynced, bytes) >= WritebackBytes && Interlocked.Exchange(ref _unsynced, 0) >= WritebackBytes) StartWriteback();
    }

    /// <summary>Bytes written after which the device asks the kernel to start writing them back.</summary>
    private const long WritebackBytes = 32L << 20;

    // Bytes written since writeback was last started.
    private long _unsynced;

    /// <summary>
    /// Starts writeback of the file's dirty pages without waiting for it (sync_file_range WRITE), as
    /// databases do every few megabytes. Otherwise the page cache gathers gigabytes, and the next
    /// fdatasync writes them all while it holds the file system journal, which stalls every
    /// concurrent write (each one updates the file's mtime through that journal) for its length.
    /// The call itself can block for tens of milliseconds when the device queue is full, so it runs
    /// on a thread of its own and never inside a writer's I/O.
    /// </summary>
    private void StartWriteback()
    {
        lock (_writebackGate)
        {
            if (_closed) return;
            _writebackWanted = true;
            if (_writeback is null)
            {
                _writeback = new Thread(WritebackLoop) { IsBackground = true, Name = "cowfish-writeback" };
                _writeback.Start();
            }
            else Monitor.Pulse(_writebackGate);
        }
    }

    // Guards _writebackWanted, _writeback and _closed.
    private readonly object _writebackGate = new();
    private bool _writebackWanted, _closed;
    private Thread? _writeback;

    private void WritebackLoop()
    {
        while (true)
        {
            lock (_writebackGate)
            {
                while (!_writebackWanted && !_closed) Monitor.Wait(_writebackGate);
                if (_closed) return;
                _writebackWanted = false;
            }
            SyncFileRange();
        }
    }

    /// <summary>sync_file_range(WRITE) over the whole file.</summary>
    private void SyncFileRange()
    {
        bool ok = false;
        _handle.DangerousAddRef(ref ok);
        try
        {
            // Failures here only lose the hint; fdatasync reports real I/O errors.
            _ = sync_file_range((int)_handle.DangerousGetHandle(), 0, 0, SyncFileRangeWrite);
        }
        finally
        {
            if (ok) _handle.DangerousRelease();
        }
    }

    public void Flush()
    {
        bool ok = false;
        _handle.DangerousAddRef(ref ok);
        try
        {
            if (fdatasync((int)_handle.DangerousGetHandle()) != 0)
                throw new DeviceIOException($"fdatasync of {_path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            if (ok) _handle.DangerousRelease();
        }
    }

    public void SetLength(long length)
    {
        try
        {
            RandomAccess.SetLength(_handle, length);
            Interlocked.Exchange(ref _length, length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DeviceIOException($"resizing {_path} to {length} bytes failed: {e.Message}", e);
        }
    }

    public void Dispose()
    {
        Thread? writeback;
        lock (_writebackGate)
        {
            _closed = true;
            writeback = _writeback;
            Monitor.PulseAll(_writebackGate);
        }
        writeback?.Join();
        _handle.Dispose();
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int fdatasync(int fd);

    private const uint SyncFileRangeWrite = 2;

    [DllImport("libc", SetLastError = true)]
    private static extern int sync_file_range(int fd, long offset, long nbytes, uint flags);
}
