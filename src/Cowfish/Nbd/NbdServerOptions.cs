namespace Cowfish.Nbd;

/// <summary>Settings of an <see cref="NbdServer"/>.</summary>
public sealed class NbdServerOptions
{
    /// <summary>Export every file read-only, whatever its volume.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>
    /// If set, a client that names a missing file (in an existing volume and directory) gets it
    /// created as a sparse file of this many bytes.
    /// </summary>
    public long? CreateSize { get; init; }

    /// <summary>Where the server reports connections and every refused request, one line each.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// If set, every request that takes longer than this, from its header read off the socket to
    /// its reply written, is logged as one line with the time it spent in each phase
    /// (docs/nbd.md). Zero logs every request.
    /// </summary>
    public TimeSpan? SlowLog { get; init; }

    /// <summary>
    /// Threads that execute requests, shared by every connection. Few: a request rarely blocks
    /// (writes are written back, reads hit the page cache), and every extra runnable thread on a
    /// small machine adds scheduling delay to the tail (fio randrw qd16 on 2 cores: 4 workers
    /// 26–29 K IOPS, 32 workers 19 K, same p99.9). A FLUSH holds its worker until it is durable.
    /// </summary>
    public int Workers { get; init; } = DefaultWorkers;

    /// <summary>Two per processor, at least four.</summary>
    public static int DefaultWorkers => Math.Max(4, 2 * Environment.ProcessorCount);

    /// <summary>Requests one connection may have in flight; the server stops reading from it past that.</summary>
    public int MaxInFlight { get; init; } = 64;

    /// <summary>Bytes of request and reply payload one connection may have in flight.</summary>
    public long MaxInFlightBytes { get; init; } = 128L << 20;

    /// <summary>Largest read, write, trim or zero length accepted (NBD_INFO_BLOCK_SIZE maximum).</summary>
    public int MaxPayload { get; init; } = 32 << 20;
}
