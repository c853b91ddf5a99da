using Cowfish.Devices;
using Cowfish.Files;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// An incremental send reads what changed, not the volume: counted in device reads on a pool opened
/// with a cold node cache, against a full send of the same snapshot.
/// </summary>
public sealed class SendCostTests(ITestOutputHelper output)
{
    private static (long Reads, long Bytes, long Stream) Measure(byte[] image, string snap, string? parent)
    {
        var dev = new CountingDevice(MemoryDevice.FromImage(image));
        using var fs = new FileSystem(Pool.Open(dev), ownsPool: true);
        long r0 = dev.Reads, b0 = dev.BytesRead;
        var ms = new MemoryStream();
        SendStream.Write(fs, snap, parent, ms);
        return (dev.Reads - r0, dev.BytesRead - b0, ms.Length);
    }

    [Fact]
    public void AnIncrementalSendReadsOnlyWhatChanged()
    {
        var mem = new MemoryDevice();
        using (var fs = new FileSystem(Pool.Create(mem), ownsPool: true))
        {
            fs.CreateVolume("v");
            for (int d = 0; d < 12; d++)
            {
                fs.CreateDirectory($"v/d{d}");
                for (int f = 0; f < 100; f++)
                {
                    fs.CreateFile($"v/d{d}/f{f}");
                    fs.Write($"v/d{d}/f{f}", 0, SendReceiveTests.Bytes(5000, d * 100 + f));
                }
            }
            fs.CreateFile("v/big");
            var chunk = SendReceiveTests.Bytes(1 << 20, 1);
            for (int i = 0; i < 32; i++) fs.Write("v/big", (long)i << 20, chunk);
            fs.Snapshot("v", "s1", readOnly: true);
            fs.Write("v/d7/f42", 100, [1, 2, 3]);
            fs.Write("v/big", 17L << 20, new byte[4096]);
            fs.Rename("v/d3/f9", "v/d4/moved");
            fs.CreateFile("v/d5/new"); // a small new file must not make the sender index the parent's files
            fs.Write("v/d5/new", 0, SendReceiveTests.Bytes(3000, 99));
            fs.Snapshot("v", "s2", readOnly: true);
            fs.Flush();
            TreeModel.AssertClean(fs.Pool, "the measured pool");
        }
        var image = mem.ToArray();
        var full = Measure(image, "s2", null);
        var inc = Measure(image, "s2", "s1");
        output.WriteLine($"full: {full.Reads} reads, {full.Bytes} bytes, stream {full.Stream}; incremental: {inc.Reads} reads, {inc.Bytes} bytes, stream {inc.Stream}");
        Assert.True(inc.Stream < 20_000, $"incremental stream of {inc.Stream} bytes");
        Assert.True(inc.Reads * 20 < full.Reads, $"incremental send made {inc.Reads} device reads, the full send {full.Reads}");
        Assert.True(inc.Bytes < 400 * 4096, $"incremental send read {inc.Bytes} bytes");
    }
}
