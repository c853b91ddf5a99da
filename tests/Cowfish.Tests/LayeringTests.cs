using System.Text.RegularExpressions;
using Xunit;

namespace Cowfish.Tests;

/// <summary>A lower layer never references a higher one.</summary>
public sealed class LayeringTests
{
    private static readonly string[] Order = ["Devices", "Format", "Allocation", "Trees", "Transactions", "Files", "Streams", "Relocation", "Checking", "Nbd"];

    private static string SourceRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Cowfish.slnx"))) dir = dir.Parent;
        Assert.NotNull(dir);
        return Path.Combine(dir!.FullName, "src", "Cowfish");
    }

    [Fact]
    public void NoLayerReferencesALayerAboveIt()
    {
        var root = SourceRoot();
        var violations = new List<string>();
        int files = 0;
        for (int i = 0; i < Order.Length; i++)
        {
            var higher = Order.Skip(i + 1).ToArray();
            foreach (var file in Directory.EnumerateFiles(Path.Combine(root, Order[i]), "*.cs", SearchOption.AllDirectories))
            {
                files++;
                var text = File.ReadAllText(file);
                foreach (var h in higher)
                    if (Regex.IsMatch(text, $@"\bCowfish\.{h}\b"))
                        violations.Add($"{Path.GetFileName(file)} ({Order[i]}) references Cowfish.{h}");
            }
        }
        Assert.True(files > 15, $"only {files} source files found under {root}");
        Assert.Empty(violations);
    }
}
