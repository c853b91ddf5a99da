using System.IO.Compression;
using System.Security.Cryptography;
using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests;

/// <summary>
/// Images written by an older version of the code (Fixtures/v1, made at commit 985eda1 by the recipe
/// in make.sh): every later version must open, check, read and receive them byte for byte.
/// </summary>
public sealed class GoldenImageTests
{
    private static readonly string Dir = Path.Combine(AppContext.BaseDirectory, "Fixtures", "v1");

    private static byte[] Unzip(string name)
    {
        using var gz = new GZipStream(File.OpenRead(Path.Combine(Dir, name)), CompressionMode.Decompress);
        var ms = new MemoryStream();
        gz.CopyTo(ms);
        return ms.ToArray();
    }

    private static IEnumerable<(string Path, string Sha, long Size)> Manifest() =>
        File.ReadAllLines(Path.Combine(Dir, "manifest.txt")).Where(l => l.Length > 0)
            .Select(l => l.Split(' ')).Select(p => (p[0], p[1], long.Parse(p[2])));

    private static string Sha(FileSystem fs, string path) => Convert.ToHexStringLower(SHA256.HashData(fs.ReadAll(path)));

    [Fact]
    public void TheV1PoolOpensChecksAndReadsByteForByte()
    {
        var device = new MemoryDevice();
        var image = Unzip("pool.v1.gz");
        device.Write(0, image);
        using var fs = new FileSystem(Pool.Open(device, null, ownsDevice: true), ownsPool: true);
        TreeModel.AssertClean(fs.Pool, "golden v1 pool as found");
        int files = 0;
        foreach (var (path, sha, size) in Manifest())
        {
            Assert.Equal((ulong)size, fs.Stat(path).Size);
            Assert.True(sha == Sha(fs, path), $"{path}: content differs from what the v1 code wrote");
            files++;
        }
        Assert.True(files >= 15, $"the manifest lists {files} files");
        Assert.Equal(298, fs.ListDirectory("vm/dir/sub").Count);
        Assert.Equal(300, fs.ListDirectory("vm@1/dir/sub").Count);

        // The old pool takes new writes, clones and snapshots, and stays clean.
        fs.Write("vm/sparse.img", 4096, new byte[8192]);
        fs.Clone("vm/dense.img", "vm/dense2.img");
        fs.Snapshot("vm", "vm@3", readOnly: true);
        fs.Flush();
        Assert.Equal(Sha(fs, "vm/dense.img"), Sha(fs, "vm/dense2.img"));
        TreeModel.AssertClean(fs.Pool, "golden v1 pool after changes");
    }

    [Fact]
    public void TheV1StreamsReceiveByteForByte()
    {
        using var fs = SendReceiveTests.NewFs();
        ReceiveStream.Apply(fs, new MemoryStream(Unzip("full.stream.gz")), new ReceiveOptions { Name = "vm@1" });
        ReceiveStream.Apply(fs, new MemoryStream(Unzip("incr.stream.gz")), new ReceiveOptions { Name = "vm@2" });
        int files = 0;
        foreach (var (path, sha, size) in Manifest().Where(m => m.Path.StartsWith("vm@")))
        {
            Assert.Equal((ulong)size, fs.Stat(path).Size);
            Assert.True(sha == Sha(fs, path), $"{path}: received content differs");
            files++;
        }
        Assert.True(files >= 10, $"the manifest lists {files} snapshot files");
        TreeModel.AssertClean(fs.Pool, "pool that received the v1 streams");
    }
}
