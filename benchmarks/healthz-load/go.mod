module visionsuit/healthzload

go 1.21
