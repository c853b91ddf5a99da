namespace Cowfish.Devices;

/// <summary>How the durable image is formed from the writes that were not yet flushed at a power cut.</summary>
public enum CrashMode
{
    /// <summary>Everything written since the last flush is lost.</summary>
    DropUnflushed,
    /// <summary>Everything since the last flush is lost except a sector-aligned prefix of the last write.</summary>
    TearLastWrite,
    /// <summary>Each unflushed write independently survives, is lost, or survives torn.</summary>
    RandomSubset,
}

/// <summary>
/// A device for crash and error tests. It keeps two images: the live one the engine sees,
/// and the durable one that would survive a power cut (everything up to the last flush).
/// Faults: fail a read, write or flush on a countdown, or cut power at a chosen flush index.
/// After a cut, every call fails, as a dead disk would.
/// </summary>
public sealed class FaultInjectingDevice : IBlockDevice
{
    public const int SectorSize = 512;

    // Guards every field: the device is a test tool, so one lock keeps it simple and exact.
    private readonly object _gate = new();
    private readonly MemoryDevice _live;
    private readonly MemoryDevice _durable;
    private readonly List<(long Offset, byte[] Data)> _unflushed = new();
    private long _durableLength;
    private bool _dead;
    private long _failReadsIn = -1, _failWritesIn = -1, _failFlushesIn = -1;
    private long _cutAtFlush = -1;

    public FaultInjectingDevice(ReadOnlySpan<byte> image = default)
    {
        _live = MemoryDevice.FromImage(image);
        _durable = MemoryDevice.FromImage(image);
        _durableLength = image.Length;
    }

    /// <summary>How many flushes have completed.</summary>
    public long FlushCount { get; private set; }

    /// <summary>Whether power was cut (or a countdown fault fired).</summary>
    public bool IsDead { get { lock (_gate) return _dead; } }

    /// <summary>The n-th read from now (1 = the next) fails; later ones succeed.</summary>
    public void FailReadIn(long n) { lock (_gate) _failReadsIn = n; }

    /// <summary>The n-th write from now fails.</summary>
    public void FailWriteIn(long n) { lock (_gate) _failWritesIn = n; }

    /// <summary>The n-th flush from now fails.</summary>
    public void FailFlushIn(long n) { lock (_gate) _failFlushesIn = n; }

    /// <summary>Power is cut when flush number <paramref name="index"/> (0-based over the device's life) is requested: it never completes.</summary>
    public void CutAtFlush(long index) { lock (_gate) _cutAtFlush = index; }

    public long Length { get { lock (_gate) return _live.Length; } }

    public void Read(long offset, Span<byte> buffer)
    {
        lock (_gate)
        {
            ThrowIfDead();
            if (Countdown(ref _failReadsIn)) throw new DeviceIOException($"injected read failure at offset {offset}");
            _live.Read(offset, buffer);
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        lock (_gate)
        {
            ThrowIfDead();
            if (Countdown(ref _failWritesIn)) throw new DeviceIOException($"injected write failure at offset {offset}");
            _live.Write(offset, buffer);
            _unflushed.Add((offset, buffer.ToArray()));
        }
    }

    public void Flush()
    {
        lock (_gate)
        {
            ThrowIfDead();
            if (_cutAtFlush == FlushCount)
            {
                _dead = true;
                throw new DeviceIOException($"injected power cut at flush {FlushCount}");
            }
            if (Countdown(ref _failFlushesIn)) throw new DeviceIOException($"injected flush failure at flush {FlushCount}");
            foreach (var (off, data) in _unflushed) _durable.Write(off, data);
            _unflushed.Clear();
            _durableLength = _live.Length;
            _durable.SetLength(_durableLength);
            FlushCount++;
        }
    }

    public void SetLength(long length)
    {
        lock (_gate)
        {
            ThrowIfDead();
            _live.SetLength(length);
        }
    }

    /// <summary>The live image: what the engine would read now.</summary>
    public byte[] LiveImage() { lock (_gate) return _live.ToArray(); }

    /// <summary>
    /// The image a power cut now would leave behind: the durable image plus, depending on
    /// <paramref name="mode"/>, some of the writes not yet flushed.
    /// </summary>
    public byte[] CrashImage(CrashMode mode, Random? rng = null)
    {
        lock (_gate)
        {
            rng ??= new Random(0);
            var img = MemoryDevice.FromImage(_durable.ToArray());
            img.SetLength(Math.Max(_durableLength, 0));
            switch (mode)
            {
                case CrashMode.DropUnflushed:
                    break;
                case CrashMode.TearLastWrite:
                    if (_unflushed.Count > 0) ApplyTorn(img, _unflushed[^1], rng);
                    break;
                case CrashMode.RandomSubset:
                    foreach (var w in _unflushed)
                    {
                        int roll = rng.Next(3);
                        if (roll == 0) img.Write(w.Offset, w.Data);
                        else if (roll == 1) ApplyTorn(img, w, rng);
                    }
                    break;
            }
            return img.ToArray();
        }
    }

    private static void ApplyTorn(MemoryDevice img, (long Offset, byte[] Data) w, Random rng)
    {
        int sectors = (w.Data.Length + SectorSize - 1) / SectorSize;
        int keep = rng.Next(sectors + 1);
        int bytes = Math.Min(w.Data.Length, keep * SectorSize);
        if (bytes > 0) img.Write(w.Offset, w.Data.AsSpan(0, bytes));
    }

    private static bool Countdown(ref long n)
    {
        if (n < 0) return false;
        n--;
        if (n == 0) { n = -1; return true; }
        return false;
    }

    private void ThrowIfDead()
    {
        if (_dead) throw new DeviceIOException("device is dead after an injected power cut");
    }

    public void Dispose() { }
}
